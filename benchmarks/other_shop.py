"""A second synthetic shop, so a benchmark can tell whether a figure holds beyond the sample shop's words.

    python -m benchmarks.other_shop --out DIR [--items N --users N --events N --days N --end-date D --seed S]
                                               [--clock-s 60]

`write_other_shop(out_dir, OtherShopConfig(...))` writes, deterministically from the seed (seeded
`random.Random` streams, gzip mtime 0: same seed, same bytes), the raw format of the embedded sample shop
(`shopllm.sample`), so `shopllm nightly --catalog 'DIR/catalog/*.jsonl.gz' --events 'DIR/events/*.jsonl.gz'`
reads it unchanged: `catalog/catalog.jsonl.gz` (one record per product), `events/events-YYYY-MM-DD.jsonl.gz`
(one per UTC day) and `shop_manifest.json` (counts).

What differs from the sample is every word: the categories (books, pet supplies, garden, skin care,
kitchenware, toys; 15 leaves, zh and en), attribute keys and values, brands, the title style
("【品牌】系列 叶类 值", "Series Leaf by Brand – Value") and the descriptions' voice: a copywriter's 1-4
sentences naming only some values (each key with its own probability, with or without the key's name).
The clickstream is the sample's kind, simpler (no complements): users prefer 1-3 top categories, a session
is a funnel in one leaf with Zipf popularity. Half the searches are lexical (brand or value + leaf noun,
as in the sample), half are intent phrases or synonyms sharing no word with the item ("主子 口粮" for cat
food, "bedtime reading" for fiction). No dirty records: every record passes ingest. Event times are to the
millisecond and seconds apart; `--clock-s 60` floors them to the minute, a feed whose clock makes events of
one minute tie (their file order is still the order they happened in).
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import html
import itertools
import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from shopllm import sample as S
from shopllm.errors import ConfigError

CATALOG_FILE = "catalog/catalog.jsonl.gz"
EVENTS_DIR = "events"
MANIFEST_FILE = "shop_manifest.json"


@dataclass(frozen=True)
class OtherShopConfig:
    items: int = 1500
    users: int = 800
    events: int = 60_000
    days: int = 30
    end_date: str = "2026-11-28"
    seed: int = 11
    clock_s: int = 0  # > 0: every event's time floored to this many seconds, so events of one minute (60) tie


# attribute -> (zh key, en key, "zh=en|..." values, share of descriptions that name it)
ATTRIBUTES = {
    "pages": ("页数", "pages", "192页=192 pages|256页=256 pages|320页=320 pages|448页=448 pages", 0.3),
    "binding": ("装帧", "binding", "平装=paperback|精装=hardcover|典藏版=collector's edition", 0.5),
    "mood": ("风格", "mood", "治愈=heartwarming|烧脑=mind-bending|奇幻=fantasy|温情=tender", 0.9),
    "cuisine": ("菜系", "cuisine", "川菜=Sichuan|粤菜=Cantonese|家常菜=home-style|素食=vegetarian", 0.9),
    "age": ("适用年龄", "age", "3-6岁=ages 3-6|6-12岁=ages 6-12|12岁以上=ages 12+|成人=adults", 0.7),
    "flavour": ("口味", "flavour", "金枪鱼=tuna|鸭肉=duck|羊肉=lamb|鸡肉=chicken", 0.9),
    "cat_age": ("适用猫龄", "cat age", "幼猫=kitten|成猫=adult cat|老年猫=senior cat", 0.7),
    "food_kg": ("净重", "net weight", "1.5kg|2kg|6kg", 0.3),
    "treat_g": ("净重", "net weight", "100g|200g|500g", 0.3),
    "breed": ("适用犬型", "breed size", "小型犬=small breeds|中型犬=medium breeds|大型犬=large breeds", 0.8),
    "litres": ("容积", "volume", "20L|45L|80L", 0.9),
    "tank": ("材质", "material", "超白玻璃=ultra-clear glass|亚克力=acrylic", 0.8),
    "filter": (
        "过滤方式",
        "filtration",
        "背挂过滤=hang-on filter|底部过滤=undergravel filter|外置过滤=canister filter",
        0.6,
    ),
    "height": ("高度", "height", "30cm|60cm|90cm|120cm", 0.4),
    "light": ("光照", "light", "耐阴=shade-tolerant|散射光=bright indirect light|全日照=full sun", 0.8),
    "care": ("养护难度", "care level", "新手友好=beginner-friendly|中等=moderate|进阶=expert", 0.5),
    "planter": ("材质", "material", "陶瓷=ceramic|树脂=resin|水泥=concrete|竹纤维=bamboo fibre", 0.8),
    "diameter": ("口径", "diameter", "12cm|18cm|25cm", 0.3),
    "colour": (
        "颜色",
        "colour",
        "雾蓝=mist blue|象牙白=ivory|墨绿=forest green|樱粉=blossom pink|岩灰=slate grey",
        0.3,
    ),
    "serum_ml": ("容量", "capacity", "30ml|50ml", 0.6),
    "sun_ml": ("容量", "capacity", "40ml|60ml|100ml", 0.6),
    "bottle_ml": ("容量", "capacity", "350ml|500ml|750ml|1L", 0.9),
    "benefit": ("功效", "benefit", "补水=hydrating|提亮=brightening|抗皱=anti-wrinkle|舒缓=soothing", 0.9),
    "skin": ("肤质", "skin type", "干皮=dry skin|油皮=oily skin|敏感肌=sensitive skin|混合肌=combination skin", 0.6),
    "spf": ("防晒指数", "SPF", "SPF30|SPF50", 0.95),
    "sheets": ("片数", "sheets", "5片装=5 sheets|10片装=10 sheets|20片装=20 sheets", 0.4),
    "bottle": ("材质", "material", "不锈钢=stainless steel|玻璃=glass|Tritan", 0.8),
    "pan_size": ("尺寸", "size", "6英寸=6-inch|8英寸=8-inch|10英寸=10-inch", 0.6),
    "pan": ("材质", "material", "碳钢=carbon steel|硅胶=silicone|阳极铝=anodised aluminium", 0.8),
    "coating": ("涂层", "coating", "不粘=nonstick|无涂层=uncoated", 0.3),
    "bricks": ("颗粒数", "pieces", "300颗粒=300 pieces|800颗粒=800 pieces|1500颗粒=1500 pieces", 0.9),
    "puzzle": ("片数", "pieces", "300片=300 pieces|500片=500 pieces|1000片=1000 pieces", 0.9),
    "theme": ("主题", "theme", "城市街景=city street|太空探索=space exploration|古堡=castle|赛车=race car", 0.9),
    "picture": ("图案", "picture", "风景=landscape|名画=famous painting|动物=animals|世界地图=world map", 0.8),
}

# top "zh=en", leaf "zh=en", attributes, brands, price range, intent phrases (zh, en) sharing no word with the items
LEAF_TABLE = [
    (
        "图书=Books",
        "文学小说=Fiction",
        "pages binding mood",
        "长河文艺=Longriver Books|青鸟出版=Bluebird Press|Harbor House",
        (29, 99),
        "睡前 读物|周末 消遣|通勤 看啥",
        "bedtime reading|page turner|beach read",
    ),
    (
        "图书=Books",
        "菜谱=Cookbooks",
        "pages binding cuisine",
        "灶台记=Hearth & Table|味道出版=Savory Press|Ladle Press",
        (39, 159),
        "学 做饭|下厨 入门|晚饭 吃什么",
        "learn to cook|dinner ideas|weeknight meals",
    ),
    (
        "图书=Books",
        "漫画=Comics",
        "pages age binding",
        "星火漫画=Sparkfire Comics|Panelworks|纸鸢=Kite Comics",
        (19, 89),
        "热血 番剧|二次元|追更 神作",
        "graphic novel|manga|superhero stories",
    ),
    (
        "宠物用品=Pet Supplies",
        "猫粮=Cat Food",
        "flavour cat_age food_kg",
        "鲜食记=Meowfresh|Whiskerly|爪爪工坊=Pawcraft",
        (39, 459),
        "主子 口粮|铲屎官 必备|喵星人 干饭",
        "kitty kibble|feline dinner|meals for my kitty",
    ),
    (
        "宠物用品=Pet Supplies",
        "狗零食=Dog Treats",
        "flavour breed treat_g",
        "汪星厨房=Woof Kitchen|Barkbite|骨乐=Bonejoy",
        (15, 129),
        "磨牙 棒|训练 奖励|毛孩子 加餐",
        "chew sticks|puppy rewards|training snacks",
    ),
    (
        "宠物用品=Pet Supplies",
        "鱼缸=Fish Tanks",
        "litres tank filter",
        "澄水=Clearwater|AquaNest|蓝湾=Bluebay",
        (99, 1299),
        "观赏 造景|桌面 生态|热带 观赏 箱",
        "aquarium|goldfish home|betta setup",
    ),
    (
        "园艺=Garden",
        "绿植=Houseplants",
        "height light care",
        "青禾=Qinghe|Leafy Lane|森屿=Mossgrove",
        (19, 399),
        "办公桌 摆件|净化 空气|阳台 盆栽",
        "desk greenery|air purifying|indoor jungle",
    ),
    (
        "园艺=Garden",
        "花盆=Planters",
        "planter diameter colour",
        "陶然=Taoran|Claymate|栖木=Perchwood",
        (9, 299),
        "多肉 容器|阳台 装饰|栽种 器皿",
        "succulent holder|pot for herbs|balcony decor",
    ),
    (
        "护肤=Skin Care",
        "精华=Serums",
        "serum_ml benefit skin",
        "水光研=Aqualab|Dermaveil|初萃=Firstbloom",
        (99, 899),
        "熬夜 急救|送妈妈 保养|换季 救星",
        "gift for mom|glow boost|late night rescue",
    ),
    (
        "护肤=Skin Care",
        "防晒霜=Sunscreen",
        "spf sun_ml skin",
        "晴朗=Sunclear|Solenne|荫盾=Shadeguard",
        (59, 399),
        "夏天 出门|海边 度假|军训 必备",
        "beach day|no more sunburn|uv shield",
    ),
    (
        "护肤=Skin Care",
        "面膜=Face Masks",
        "sheets benefit skin",
        "润颜=Runyan|Maskery|一叶=Oneleaf",
        (29, 259),
        "敷脸 时刻|约会 前夜|急救 敷贴",
        "pamper night|quick glow|spa night at home",
    ),
    (
        "厨具=Kitchenware",
        "水杯=Water Bottles",
        "bottle_ml bottle colour",
        "行者=Wayfarer|Hydrofly|山泉=Springpeak",
        (39, 299),
        "健身 补给|通勤 随身|徒步 必带",
        "gym hydration|commute sipper|hiking flask",
    ),
    (
        "厨具=Kitchenware",
        "烘焙模具=Baking Pans",
        "pan_size pan coating",
        "焙乐=Bakejoy|Ovenly|麦香=Wheatfield",
        (19, 259),
        "做蛋糕|烤 戚风|家用 烤箱",
        "cake tin|sponge cake|brownie tray",
    ),
    (
        "玩具=Toys",
        "积木=Building Blocks",
        "bricks age theme",
        "积木王国=Brickdom|Blockwise|童趣=Kidsplay",
        (49, 1299),
        "动手 拼装|乐高 同款|送 男孩 礼物",
        "lego style|stem kit|gift for boys",
    ),
    (
        "玩具=Toys",
        "拼图=Jigsaw Puzzles",
        "puzzle age picture",
        "拼乐=Pinle|Jigworth|画境=Picturo",
        (29, 199),
        "益智 游戏|亲子 时光|减压 手工",
        "rainy day activity|family game night|brain teaser",
    ),
]


@dataclass(frozen=True)
class Leaf:
    index: int
    top: tuple[str, str]
    name: tuple[str, str]
    attrs: tuple[str, ...]
    brands: tuple[tuple[str, str], ...]
    price: tuple[int, int]
    intents: tuple[tuple[str, ...], tuple[str, ...]]  # (zh phrases, en phrases)


LEAVES = [
    Leaf(
        i,
        S._pairs(top)[0],
        S._pairs(name)[0],
        tuple(attrs.split()),
        tuple(S._pairs(brands)),
        price,
        (tuple(zh.split("|")), tuple(en.split("|"))),
    )
    for i, (top, name, attrs, brands, price, zh, en) in enumerate(LEAF_TABLE)
]
TOPS = list(dict.fromkeys(leaf.top for leaf in LEAVES))
VALUES = {a: S._pairs(spec[2]) for a, spec in ATTRIBUTES.items()}


@dataclass
class Product:
    item_id: str
    leaf: Leaf
    lang: str
    brand: str
    series: str
    attrs: list[tuple[str, int]]  # (attribute, value index)
    price: float

    @property
    def li(self) -> int:
        return 0 if self.lang == "zh" else 1

    def noun(self) -> str:
        return self.leaf.name[self.li]

    def pairs(self) -> list[tuple[str, str]]:
        """(key, value) in the product's language."""
        return [(ATTRIBUTES[a][self.li], VALUES[a][v][self.li]) for a, v in self.attrs]

    def text(self) -> str:
        """Everything a lexical search could match: title, category, brand, attribute keys and values."""
        kv = " ".join(f"{k} {v}" for k, v in self.pairs())
        return " ".join([title(self), category(self), self.brand, kv]).lower()


# ---- catalog -------------------------------------------------------------------------------------

_ZH_SERIES = ["云朵", "小满", "初雪", "暖冬", "松间", "山岚", "拾穗", "青柠"]
_EN_SERIES = ["Cloud", "Meadow", "Nova", "Ember", "Tide", "Willow", "Aurora", "Pebble"]
_ZH_BOOK = (["月光", "北方", "海岸", "灯塔", "纸上", "深夜"], ["来客", "旅馆", "信札", "之歌", "列车", "群岛"])
_EN_BOOK = (
    ["Midnight", "Paper", "Northern", "Lantern", "Winter", "Salt"],
    ["Harbour", "Letters", "Express", "Atlas", "Orchard", "Islands"],
)


def _series(rng: random.Random, leaf: Leaf, lang: str) -> str:
    if leaf.top[1] == "Books":
        a, b = _ZH_BOOK if lang == "zh" else _EN_BOOK
        return f"《{rng.choice(a)}{rng.choice(b)}》" if lang == "zh" else f"{rng.choice(a)} {rng.choice(b)}"
    return rng.choice(_ZH_SERIES if lang == "zh" else _EN_SERIES)


def _new_product(rng: random.Random, idx: int, leaf: Leaf) -> Product:
    lang = "zh" if rng.random() < 0.55 else "en"
    keys = rng.sample(leaf.attrs, rng.randint(2, min(4, len(leaf.attrs))))
    attrs = [(a, rng.randrange(len(VALUES[a]))) for a in keys]
    lo, hi = leaf.price
    price = max(1.0, round(lo * (hi / lo) ** rng.random()) - 0.1)
    brand = rng.choice(leaf.brands)[0 if lang == "zh" else 1]
    return Product(f"Q{idx:06d}", leaf, lang, brand, _series(rng, leaf, lang), attrs, round(price, 2))


def title(p: Product) -> str:
    vals = [v for _, v in p.pairs()][:2]
    if p.lang == "zh":
        return f"【{p.brand}】{p.series} {p.noun()} {' '.join(vals)}"
    return f"{p.series} {p.noun()} by {p.brand} – {', '.join(S._cap(v) for v in vals)}"


def category(p: Product) -> str:
    return f"{p.leaf.top[p.li]} > {p.noun()}"


@dataclass
class Catalog:
    products: list[Product]
    by_leaf: list[list[Product]]  # most popular first
    cum: list[list[float]]  # Zipf cumulative weights aligned with by_leaf

    def pick(self, rng: random.Random, leaf: int, lang: str | None = None) -> Product:
        pool, cum = self.by_leaf[leaf], self.cum[leaf]
        while True:  # rejection keeps the Zipf order inside one language
            p = rng.choices(pool, cum_weights=cum)[0]
            if lang is None or p.lang == lang or not any(q.lang == lang for q in pool):
                return p


def build_catalog(cfg: OtherShopConfig) -> Catalog:
    rng = random.Random(f"{cfg.seed}:other-catalog")
    weights = [0.5 + rng.random() for _ in LEAVES]
    leaves = LEAVES[: cfg.items] + rng.choices(LEAVES, weights=weights, k=max(0, cfg.items - len(LEAVES)))
    products = [_new_product(rng, i, leaf) for i, leaf in enumerate(leaves)]
    by_leaf: list[list[Product]] = [[] for _ in LEAVES]
    for p in products:
        by_leaf[p.leaf.index].append(p)
    for pool in by_leaf:
        rng.shuffle(pool)
    cum = [list(itertools.accumulate(1.0 / (r + 1) ** 1.1 for r in range(len(pool)))) for pool in by_leaf]
    return Catalog(products, by_leaf, cum)


# ---- descriptions: a copywriter's voice, naming only some values -----------------------------------

VOICE = {  # sentence templates: {b} brand, {s} series, {n} leaf noun, {k} key, {v} value ({K}, {V}: capitalised)
    "zh": {
        "open": [
            "{b}的{s}{n}，店里卖得最好的一款。",
            "说到{n}，{b}一直是我们的首选。",
            "{s}是{b}今年主推的{n}。",
            "想找一款靠谱的{n}，不妨先看看{b}。",
            "这款{n}来自{b}，老顾客回购不断。",
            "店长私藏：{b}{s}。",
        ],
        "keyed": ["{k}{v}，刚刚好。", "我们挑的是{k}{v}的版本。", "{k}选{v}，心里有数。"],
        "value": ["{v}，是它最大的亮点。", "主打{v}，懂行的人都知道。", "偏爱{v}的朋友别错过。"],
        "multi": ["{v1}、{v2}，一次全都有。", "{v1}加上{v2}，诚意满满。"],
        "shop": [
            "本店所售均为品牌授权正品。",
            "现货当天打包，破损包赔。",
            "满两件享九五折。",
            "收到不满意可联系客服换货。",
        ],
    },
    "en": {
        "open": [
            "Meet the {s} {n} from {b}.",
            "{b} got the {n} just right with the {s}.",
            "Our team keeps reaching for this {n} by {b}.",
            "If you need a new {n}, start with {b}.",
            "From the {b} {s} line, a {n} worth keeping.",
            "Staff pick this month: the {b} {s}.",
        ],
        "keyed": ["{K} — {v}, as promised.", "Look at the {k}: {v}.", "Best part is the {k}: {v}."],
        "value": [
            "{V}, exactly as it should be.",
            "All about {v}.",
            "{V} is what sets it apart.",
            "You will notice the {v} right away.",
        ],
        "multi": ["{V1}, {v2} and made with care.", "Both {v1} and {v2}, no compromise."],
        "shop": [
            "Orders placed before noon ship the same day.",
            "Returns are free for a fortnight, no questions asked.",
            "Packed by hand in our own warehouse.",
            "Authorised retailer, backed by a one-year warranty.",
        ],
    },
}


def _fill(template: str, **kw: str) -> str:
    caps = {k.upper(): v[:1].upper() + v[1:] for k, v in kw.items()}
    return template.format(**kw, **caps)


def description(p: Product, rng: random.Random) -> str:
    """1-4 sentences of light HTML in the product's language, naming each value with its key's probability."""
    voice, esc = VOICE[p.lang], (lambda s: html.escape(s, quote=False))  # noqa: E731
    named = [(esc(k), esc(v)) for (a, _), (k, v) in zip(p.attrs, p.pairs()) if rng.random() < ATTRIBUTES[a][3]]
    says = []
    while named:
        if len(named) >= 2 and rng.random() < 0.3:
            (_, v1), (_, v2) = named[:2]
            says.append(_fill(rng.choice(voice["multi"]), v1=v1, v2=v2))
            named = named[2:]
        else:
            k, v = named.pop(0)
            says.append(_fill(rng.choice(voice["keyed" if rng.random() < 0.4 else "value"]), k=k, v=v))
    noun = p.noun() if p.lang == "zh" else re.sub(r"(?<!s)s$", "", p.noun().lower())  # "a water bottle"
    opener = _fill(rng.choice(voice["open"]), b=esc(p.brand), s=esc(p.series), n=noun)
    sentences = ([opener] if rng.random() < 0.75 or not says else []) + says
    if rng.random() < 0.25 and len(sentences) < 4:
        sentences.append(rng.choice(voice["shop"]))
    sentences, sep = sentences[-4:], "" if p.lang == "zh" else " "
    layout = rng.randrange(3)
    if layout == 0 or len(sentences) == 1:
        return f"<p>{sep.join(sentences)}</p>"
    if layout == 1:
        return f"<p>{'<br>'.join(sentences)}</p>"
    return f"<p>{sentences[0]}</p><p>{sep.join(sentences[1:])}</p>"


def catalog_record(p: Product, rng: random.Random, window_start: float) -> dict:
    updated = window_start - rng.uniform(3, 120) * 86400
    return {
        "item_id": p.item_id,
        "title": title(p),
        "description": description(p, rng),
        "category": category(p),
        "brand": p.brand,
        "price": p.price,
        "currency": S.CURRENCY,
        "attributes": dict(p.pairs()),
        "updated_at": S._iso(updated, rng.choice(S.OFFSETS)),
    }


# ---- searches ------------------------------------------------------------------------------------


def query_for(rng: random.Random, p: Product) -> tuple[str, str]:
    """(kind, query) in p's language: "intent" (a leaf phrase) about half the time, else "lexical"."""
    if rng.random() < 0.5:
        return "intent", rng.choice(p.leaf.intents[p.li])
    word = p.brand if rng.random() < 0.4 else rng.choice(p.pairs())[1]
    q = f"{word} {p.noun()}"
    return "lexical", q if p.lang == "zh" else q.lower()


_CJK = re.compile(r"[\u3400-\u9fff]")


def shares_word(query: str, text: str) -> bool:
    """Whether a word of the query (split on spaces) is in the text: a Chinese word as a substring, a Latin
    one when a letter/digit run of it is a run of the text (so "12+" matches "12")."""
    runs = set(re.findall(r"[a-z0-9]+", text.lower()))
    for word in query.lower().split():
        if _CJK.search(word) and word in text:
            return True
        if set(re.findall(r"[a-z0-9]+", word)) & runs:
            return True
    return False


# ---- users and sessions --------------------------------------------------------------------------


def _new_user(rng: random.Random, idx: int) -> S.User:
    preferred = rng.sample(range(len(TOPS)), rng.choices([1, 2, 3], weights=[0.35, 0.4, 0.25])[0])
    share = dict(zip(preferred, [1.0, 0.5, 0.3]))
    weights = []
    for leaf in LEAVES:
        t = TOPS.index(leaf.top)
        w = 0.1 / len(LEAVES)
        if t in share:
            w += 0.9 * share[t] / sum(share.values()) * (0.3 + rng.random())
        weights.append(w)
    return S.User(f"V{idx:05d}", rng.choice(S.OFFSETS), list(itertools.accumulate(weights)), rng.lognormvariate(0, 0.9))


def _session(rng: random.Random, catalog: Catalog, u: S.User) -> list[tuple]:
    """(event_type, item_id, query) of one session in one leaf."""
    if u.last_sub is not None and rng.random() < 0.45:
        leaf = u.last_sub
    else:
        leaf = min(bisect.bisect_right(u.sub_cum, rng.random() * u.sub_cum[-1]), len(LEAVES) - 1)
    events: list[tuple] = []
    if rng.random() < 0.28:
        target = catalog.pick(rng, leaf)
        events.append(("search", None, query_for(rng, target)[1]))
        shown = [target] + [catalog.pick(rng, leaf, target.lang) for _ in range(rng.choice([0, 1, 1, 2]))]
        more, _ = S._funnel(rng, catalog, list({p.item_id: p for p in shown}.values()), clicked_already=True)
    else:
        shown = [catalog.pick(rng, leaf) for _ in range(1 + min(int(rng.expovariate(0.5)), 7))]
        more, _ = S._funnel(rng, catalog, shown, clicked_already=False)
    u.last_sub = leaf
    return events + more


def generate_events(
    catalog: Catalog, cfg: OtherShopConfig, start: float, end: float
) -> tuple[list[S.Event], list[S.User]]:
    """Exactly cfg.events events (every user gets a session first), sorted by time."""
    rng = random.Random(f"{cfg.seed}:other-events")
    users = [_new_user(rng, i) for i in range(cfg.users)]
    cum_activity = list(itertools.accumulate(u.activity for u in users))
    total, n = 0, 0
    while total < cfg.events:
        u = users[n] if n < len(users) else users[bisect.bisect_right(cum_activity, rng.random() * cum_activity[-1])]
        n += 1
        if len(u.sessions) >= cfg.days * 6:  # sessions stay hours apart
            u = min(users, key=lambda x: len(x.sessions))
        full = _session(rng, catalog, u)
        acts = full[: max(1, cfg.events - total - max(0, len(users) - n))]
        if acts[-1][0] == "search":  # cut short right after a search: a view of its target instead
            acts[-1] = ("view", full[len(acts)][1], None)
        sid = f"S{rng.getrandbits(48):012x}" if rng.random() < 0.5 else None
        u.sessions.append((acts, S._gaps(rng, len(acts)), sid))
        total += len(acts)
    events = []
    for u in users:
        for t0, (acts, offs, sid) in zip(S._place_sessions(rng, u, start, end), u.sessions):
            events += [S.Event(u, sid, et, item, q, int((t0 + o) * 1000)) for (et, item, q), o in zip(acts, offs)]
    events.sort(key=lambda e: (e.ts_ms, e.user.user_id))
    for i, e in enumerate(events):
        e.event_id = f"O{cfg.seed:x}-{i:08d}"
    return events, users


def search_stats(events: list[S.Event], catalog: Catalog) -> dict:
    """Queries and their repeats, and how many searches share no word with the item clicked next."""
    by_type = {t: 0 for t in ("view", "click", "add_to_cart", "purchase", "search")}
    queries: dict[str, int] = {}
    last_search: dict[str, str] = {}
    answered = no_word = 0
    for e in events:  # in time order; a user's sessions are hours apart, so the next click answers the search
        by_type[e.event_type] += 1
        if e.query is not None:
            queries[e.query] = queries.get(e.query, 0) + 1
            last_search[e.user.user_id] = e.query
        elif (q := last_search.pop(e.user.user_id, None)) is not None and e.event_type == "click":
            answered += 1
            no_word += not shares_word(q, catalog.products[int(e.item_id[1:])].text())
    return {
        "by_type": by_type,
        "distinct_queries": len(queries),
        "queries_searched_3_times_or_more": sum(1 for c in queries.values() if c >= 3),
        "searches_with_no_word_of_their_target": round(no_word / answered, 4) if answered else None,
    }


# ---- writing -------------------------------------------------------------------------------------


def validate(cfg: OtherShopConfig) -> dt.date:
    try:
        end = dt.date.fromisoformat(cfg.end_date)
    except ValueError:
        raise ConfigError(f"end date is not YYYY-MM-DD: {cfg.end_date!r}") from None
    if cfg.items < len(LEAVES):
        raise ConfigError(f"items must be at least {len(LEAVES)} (one per leaf category), got {cfg.items}")
    if cfg.clock_s < 0:
        raise ConfigError(f"clock_s must be >= 0 (0: times to the millisecond), got {cfg.clock_s}")
    if not 1 <= cfg.users <= cfg.events <= cfg.users * cfg.days * 20:
        raise ConfigError(f"{cfg.events} events do not fit {cfg.users} users over {cfg.days} days (1 to 20 a day each)")
    return end


def write_other_shop(out_dir, cfg: OtherShopConfig = OtherShopConfig()) -> dict:
    """Write the catalog, the daily event files and the manifest under out_dir; return the manifest."""
    end = validate(cfg)
    out = Path(out_dir)
    first = end - dt.timedelta(days=cfg.days - 1)
    start_s = dt.datetime.combine(first, dt.time(), dt.UTC).timestamp()

    catalog = build_catalog(cfg)
    rng = random.Random(f"{cfg.seed}:other-records")
    S._write_gz(out / CATALOG_FILE, [S._dumps(catalog_record(p, rng, start_s)) for p in catalog.products])
    events, users = generate_events(catalog, cfg, start_s, start_s + cfg.days * 86400)
    if cfg.clock_s:
        for e in events:
            e.ts_ms -= e.ts_ms % (cfg.clock_s * 1000)
    lines = [(e.ts_ms, S._dumps(S.event_record(e, rng))) for e in events]
    files = S._write_days(out / EVENTS_DIR, lines, first, cfg.days)

    manifest = {
        "shop": "other",
        "config": asdict(cfg),
        "window": {"first_day": first.isoformat(), "last_day": end.isoformat()},
        "catalog": {
            "path": CATALOG_FILE,
            "items": len(catalog.products),
            "categories": len(TOPS),
            "leaf_categories": len(LEAVES),
            "by_language": {lang: sum(p.lang == lang for p in catalog.products) for lang in ("zh", "en")},
        },
        "events": {
            "files": files,
            "lines": len(lines),
            "users": len({e.user.user_id for e in events}),
            "sessions": sum(len(u.sessions) for u in users),
            **search_stats(events, catalog),
        },
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return manifest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder: catalog/, events/, shop_manifest.json")
    defaults = OtherShopConfig()
    for name, value in asdict(defaults).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value, help=f"(default: {value})")
    args = p.parse_args(argv)
    cfg = OtherShopConfig(**{name: getattr(args, name) for name in asdict(defaults)})
    try:
        manifest = write_other_shop(args.out, cfg)
    except ConfigError as e:
        p.error(str(e))
    print(json.dumps(manifest, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
