"""The embedded sample shop: a bilingual catalog and a clickstream with structure a model can learn.

`write_sample(out_dir, SampleConfig(...))` writes, deterministically from the seed (same seed, same
bytes: gzip with mtime 0, no set iteration, seeded `random.Random` streams):

- `catalog/catalog.jsonl.gz`: one JSON record per product version (about 10% of products have 2-3
  versions; the newest `updated_at` differs in price and title);
- `events/events-YYYY-MM-DD.jsonl.gz`: one file per UTC day of the window;
- `sample_manifest.json`: paths, counts and the dirty records by kind.

The structure a sequence model can find, and popularity cannot:

- every user prefers 1-3 top-level categories, and most of their sessions stay there;
- a session is a funnel in one sub-category (view -> click -> add_to_cart -> purchase), and the next
  session often continues the sub-category of the last one;
- popularity inside a sub-category is Zipf-like; users often stay with the brand they just looked at;
- a purchase of an item with a complement (phone -> phone case, coffee -> grinder) is often followed,
  in the same or the next session, by the complement (`complement_map`);
- searches name a sub-category, a brand or an attribute value of the item clicked after them, in that
  item's language; the query pool is small enough that popular queries repeat many times.

A share `dirty_rate` of the records are the kinds of bad records a real feed has (see DIRTY_EVENT_KINDS
and DIRTY_CATALOG_KINDS); they are extra catalog records with their own ids (no event refers to
them) or altered event lines, so the clean products and users keep their counts.
"""

from __future__ import annotations

import bisect
import datetime as dt
import gzip
import html
import itertools
import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shopllm.errors import ConfigError

CATALOG_FILE = "catalog/catalog.jsonl.gz"
EVENTS_DIR = "events"
MANIFEST_FILE = "sample_manifest.json"
CURRENCY = "CNY"

DIRTY_EVENT_KINDS = (
    "missing_user_id",
    "unknown_event_type",
    "unparseable_ts",
    "unknown_item_id",
    "not_json",
    "invalid_utf8",
    "duplicate_event",
)
# Rejected by ingest; "too_long" is always exactly one product, the others share dirty_rate.
DIRTY_CATALOG_KINDS = (
    "negative_price",
    "missing_title",
    "empty_title_after_cleaning",
    "wrong_type_price",
    "not_json",
    "invalid_utf8",
)
# Kept by ingest after cleaning (masked, normalised).
CLEANABLE_CATALOG_KINDS = ("pii", "control_chars", "full_width")
TOO_LONG_BYTES = 1_100_000  # the one description over 1 MB


@dataclass(frozen=True)
class SampleConfig:
    items: int = 2000  # clean products (distinct item_ids that events refer to)
    users: int = 1000  # users with at least one session
    events: int = 100_000  # event lines over all files, dirty ones included
    days: int = 30  # days of clickstream, one file per UTC day
    end_date: str = "2026-11-28"  # the last day of the window (YYYY-MM-DD, UTC)
    seed: int = 7
    dirty_rate: float = 0.01  # share of bad records among events and among catalog records


# ---- the taxonomy ----------------------------------------------------------------------------------
# Compact tables: "zh=en|zh=en" pairs; a value without "=" is the same in both languages.

ATTRIBUTES = {  # attribute -> (zh key, en key, values)
    "color": ("颜色", "color", "黑色=black|白色=white|红色=red|蓝色=blue|粉色=pink|灰色=grey|绿色=green"),
    "connect": ("连接方式", "connectivity", "无线蓝牙=wireless bluetooth|有线=wired"),
    "anc": ("降噪", "noise control", "主动降噪=noise cancelling|通透模式=transparency mode"),
    "battery": ("续航", "battery life", "24小时=24 hours|30小时=30 hours|7天=7 days"),
    "storage": ("存储容量", "storage", "128GB|256GB|512GB"),
    "screen": ("屏幕尺寸", "screen size", "6.1英寸=6.1-inch|6.7英寸=6.7-inch"),
    "tab_screen": ("屏幕尺寸", "screen size", "11英寸=11-inch|13英寸=13-inch"),
    "compat": ("适用机型", "compatible with", "iPhone 16|Mate 70|小米15=Xiaomi 15|Galaxy S25"),
    "case_material": ("材质", "material", "硅胶=silicone|皮革=leather|磨砂=frosted"),
    "power": ("功率", "power", "20W|33W|65W|100W"),
    "port": ("接口", "port", "USB-C|双口=dual-port"),
    "case_size": ("表盘尺寸", "case size", "41mm|45mm"),
    "size": ("尺码", "size", "S|M|L|XL"),
    "cloth": ("材质", "material", "纯棉=cotton|莫代尔=modal|涤纶=polyester"),
    "fit": ("版型", "fit", "修身=slim|宽松=loose|直筒=straight"),
    "jacket_material": ("材质", "material", "羽绒=down|羊毛=wool|防风面料=windproof"),
    "pack": ("包装", "pack", "3双装=3 pairs|5双装=5 pairs"),
    "finish": ("质地", "finish", "哑光=matte|滋润=satin|镜面=glossy"),
    "ml": ("容量", "capacity", "30ml|50ml|100ml|200ml|400ml"),
    "skin": ("适用肤质", "skin type", "干性=dry|油性=oily|混合=combination|敏感=sensitive"),
    "palette": ("色盘", "palette", "大地色=earth tones|玫瑰色=rose|蜜桃色=peach"),
    "light": ("色温", "light color", "暖光=warm white|自然光=natural white|冷光=cool white"),
    "watt": ("功率", "power", "5W|9W|12W"),
    "base": ("灯头", "base", "E27|E14"),
    "filling": ("填充物", "filling", "乳胶=latex|羽绒=down|记忆棉=memory foam"),
    "bed": ("规格", "bed size", "1.5米=queen|1.8米=king"),
    "roast": ("烘焙程度", "roast", "浅烘=light roast|中烘=medium roast|深烘=dark roast"),
    "origin": ("产地", "origin", "云南=Yunnan|埃塞俄比亚=Ethiopia|哥伦比亚=Colombia"),
    "grams": ("净含量", "net weight", "250g|500g|1kg"),
    "tea": ("品类", "tea type", "绿茶=green tea|红茶=black tea|乌龙=oolong"),
    "flavor": ("口味", "flavor", "原味=original|麻辣=spicy|海苔=seaweed"),
    "shoe_size": ("尺码", "size", "39|40|41|42|43"),
    "run_type": ("类型", "type", "缓震=cushioned|竞速=racing|稳定=stability"),
    "mm": ("厚度", "thickness", "6mm|8mm|10mm"),
    "mat": ("材质", "material", "TPE|天然橡胶=natural rubber"),
    "kg": ("重量", "weight", "5kg|10kg|20kg"),
    "bell": ("材质", "material", "包胶=rubber-coated|电镀=chrome"),
    "diaper": ("尺码", "size", "NB|S|M|L|XL"),
    "count": ("数量", "count", "60片=60 pieces|80片=80 pieces|10包=10 packs"),
    "scent": ("香型", "scent", "无香=unscented|芦荟=aloe"),
    "bottle": ("材质", "material", "玻璃=glass|PPSU"),
    "age": ("适用年龄", "age", "0-6个月=0-6 months|6-12个月=6-12 months|1-3岁=1-3 years"),
    "genre": ("题材", "genre", "科幻=sci-fi|悬疑=mystery|历史=history"),
    "binding": ("装帧", "binding", "平装=paperback|精装=hardcover"),
    "topic": ("主题", "topic", "Python|机器学习=machine learning|算法=algorithms|Rust"),
    "cat_flavor": ("口味", "flavor", "鸡肉=chicken|三文鱼=salmon|牛肉=beef"),
    "cat_stage": ("适用阶段", "life stage", "幼猫=kitten|成猫=adult cat"),
    "dog_stage": ("适用阶段", "life stage", "幼犬=puppy|成犬=adult dog"),
    "pet_kg": ("净含量", "net weight", "1.5kg|2kg|10kg"),
    "litter": ("类型", "type", "豆腐砂=tofu|膨润土=bentonite|混合砂=mixed"),
    "toy": ("类型", "type", "逗猫棒=teaser wand|磨牙棒=chew stick|飞盘=frisbee"),
    "people": ("适用人数", "sleeps", "2人=2-person|3-4人=4-person"),
    "season": ("季节", "season", "三季=3-season|四季=4-season"),
    "temp": ("舒适温度", "comfort rating", "5℃|0℃|-10℃"),
    "bag_filling": ("填充物", "filling", "羽绒=down|棉=cotton"),
    "litres": ("容量", "volume", "30L|40L|50L"),
    "burr": ("磨芯", "burr", "锥刀=conical burr|平刀=flat burr"),
    "cm": ("尺寸", "size", "24cm|28cm|32cm"),
    "pot": ("材质", "material", "铸铁=cast iron|不锈钢=stainless steel|不粘=nonstick"),
    "knife": ("类型", "type", "菜刀=chef knife|水果刀=paring knife|刀具套装=knife set"),
    "pieces": ("件数", "pieces", "6件套=6-piece|10件套=10-piece"),
    "tea_set": ("材质", "material", "陶瓷=ceramic|玻璃=glass|紫砂=clay"),
    "modes": ("清洁模式", "modes", "3档=3 modes|5档=5 modes"),
    "heads": ("数量", "pack", "2支装=2-pack|4支装=4-pack|8支装=8-pack"),
    "head_type": ("类型", "type", "清洁=clean|美白=whitening|敏感=sensitive"),
    "hair": ("适用发质", "hair type", "干性=dry|油性=oily|受损=damaged"),
    "paper": ("内页", "ruling", "横线=lined|方格=grid|空白=blank"),
    "paper_size": ("尺寸", "size", "A5|B5|A4"),
    "nib": ("笔尖", "nib", "EF|F|M"),
}

# top category (zh, en) -> sub-categories: (zh, en, attributes, brands, (min price, max price))
TAXONOMY = [
    (
        ("数码", "Electronics"),
        [
            (
                "耳机",
                "Headphones",
                "connect color anc battery",
                "索尼=Sony|漫步者=Edifier|森海塞尔=Sennheiser|Bose|华为=Huawei",
                (99, 2999),
            ),
            (
                "手机",
                "Phones",
                "storage color screen",
                "苹果=Apple|华为=Huawei|小米=Xiaomi|三星=Samsung|OPPO",
                (1999, 8999),
            ),
            (
                "手机壳",
                "Phone Cases",
                "compat case_material color",
                "倍思=Baseus|图拉斯=Torras|Spigen|苹果=Apple",
                (19, 199),
            ),
            ("充电器", "Chargers", "power port color", "安克=Anker|倍思=Baseus|绿联=Ugreen|小米=Xiaomi", (39, 299)),
            (
                "平板",
                "Tablets",
                "storage tab_screen color",
                "苹果=Apple|华为=Huawei|小米=Xiaomi|联想=Lenovo",
                (1499, 6999),
            ),
            (
                "智能手表",
                "Smartwatches",
                "case_size color battery",
                "苹果=Apple|华为=Huawei|小米=Xiaomi|佳明=Garmin",
                (299, 3999),
            ),
        ],
    ),
    (
        ("服装", "Apparel"),
        [
            ("T恤", "T-Shirts", "size color cloth", "优衣库=Uniqlo|李宁=Li-Ning|海澜之家=HLA|Levi's", (49, 299)),
            ("牛仔裤", "Jeans", "size fit color", "Levi's|优衣库=Uniqlo|Lee|森马=Semir", (99, 699)),
            (
                "外套",
                "Jackets",
                "size color jacket_material",
                "波司登=Bosideng|优衣库=Uniqlo|北面=The North Face|太平鸟=Peacebird",
                (199, 1999),
            ),
            ("袜子", "Socks", "pack color cloth", "优衣库=Uniqlo|浪莎=Langsha|南极人=Nanjiren", (19, 99)),
        ],
    ),
    (
        ("美妆", "Beauty"),
        [
            (
                "口红",
                "Lipstick",
                "color finish",
                "迪奥=Dior|香奈儿=Chanel|完美日记=Perfect Diary|花西子=Florasis|阿玛尼=Armani",
                (89, 459),
            ),
            (
                "面霜",
                "Face Cream",
                "ml skin",
                "兰蔻=Lancôme|雅诗兰黛=Estée Lauder|珀莱雅=Proya|薇诺娜=Winona",
                (129, 1599),
            ),
            ("卸妆水", "Makeup Remover", "ml skin", "贝德玛=Bioderma|植村秀=Shu Uemura|芙丽芳丝=Freeplus", (59, 399)),
            (
                "眼影",
                "Eyeshadow",
                "palette finish",
                "完美日记=Perfect Diary|3CE|花西子=Florasis|植村秀=Shu Uemura",
                (79, 599),
            ),
        ],
    ),
    (
        ("家居", "Home"),
        [
            ("台灯", "Desk Lamps", "light watt color", "飞利浦=Philips|小米=Xiaomi|欧普=OPPLE|明基=BenQ", (59, 899)),
            ("灯泡", "Light Bulbs", "watt light base", "飞利浦=Philips|欧普=OPPLE|雷士=NVC|小米=Xiaomi", (9, 99)),
            ("枕头", "Pillows", "filling color", "水星家纺=Mercury|罗莱=Luolai|富安娜=Fuanna|宜家=IKEA", (49, 599)),
            (
                "床单",
                "Bed Sheets",
                "bed cloth color",
                "水星家纺=Mercury|罗莱=Luolai|宜家=IKEA|无印良品=MUJI",
                (79, 699),
            ),
        ],
    ),
    (
        ("食品", "Food"),
        [
            (
                "咖啡",
                "Coffee",
                "roast origin grams",
                "星巴克=Starbucks|雀巢=Nestlé|三顿半=Saturnbird|瑞幸=Luckin|illy",
                (39, 299),
            ),
            ("茶叶", "Tea", "tea grams", "立顿=Lipton|八马=Bama|小罐茶=Xiaoguan|大益=Dayi", (29, 899)),
            ("零食", "Snacks", "flavor grams", "三只松鼠=Three Squirrels|良品铺子=Bestore|百草味=Be&Cheery", (15, 129)),
        ],
    ),
    (
        ("运动", "Sports"),
        [
            (
                "跑鞋",
                "Running Shoes",
                "shoe_size color run_type",
                "耐克=Nike|阿迪达斯=Adidas|李宁=Li-Ning|安踏=Anta|亚瑟士=ASICS",
                (299, 1499),
            ),
            (
                "运动袜",
                "Sports Socks",
                "size color pack",
                "耐克=Nike|阿迪达斯=Adidas|李宁=Li-Ning|安德玛=Under Armour",
                (29, 129),
            ),
            ("瑜伽垫", "Yoga Mats", "mm mat color", "Keep|lululemon|迪卡侬=Decathlon", (59, 799)),
            ("哑铃", "Dumbbells", "kg bell", "Keep|迪卡侬=Decathlon|舒华=Shuhua", (79, 999)),
        ],
    ),
    (
        ("母婴", "Baby"),
        [
            ("纸尿裤", "Diapers", "diaper count", "帮宝适=Pampers|花王=Merries|好奇=Huggies|大王=Goo.N", (69, 299)),
            ("湿巾", "Baby Wipes", "count scent", "好奇=Huggies|全棉时代=Purcotton|帮宝适=Pampers|babycare", (19, 99)),
            ("奶瓶", "Baby Bottles", "bottle ml age", "贝亲=Pigeon|新安怡=Avent|可么多么=Comotomo|babycare", (59, 299)),
        ],
    ),
    (
        ("图书", "Books"),
        [
            (
                "小说",
                "Novels",
                "genre binding",
                "人民文学出版社=People's Literature|中信出版社=CITIC Press|企鹅=Penguin|译林=Yilin",
                (25, 129),
            ),
            (
                "编程",
                "Programming",
                "topic binding",
                "机械工业出版社=China Machine Press|人民邮电出版社=Posts & Telecom Press|图灵=Turing|O'Reilly",
                (49, 199),
            ),
            ("绘本", "Picture Books", "age binding", "蒲蒲兰=Pupulan|信谊=Hsin-Yi|接力=Jieli", (19, 99)),
        ],
    ),
    (
        ("宠物", "Pets"),
        [
            (
                "猫粮",
                "Cat Food",
                "cat_flavor cat_stage pet_kg",
                "皇家=Royal Canin|渴望=Orijen|麦富迪=Myfoodie|网易严选=Yanxuan",
                (49, 699),
            ),
            ("猫砂", "Cat Litter", "litter pet_kg", "洁客=Drymax|pidan|网易严选=Yanxuan", (29, 159)),
            (
                "狗粮",
                "Dog Food",
                "cat_flavor dog_stage pet_kg",
                "皇家=Royal Canin|渴望=Orijen|冠能=Pro Plan|比瑞吉=Nature Bridge",
                (59, 799),
            ),
            ("宠物玩具", "Pet Toys", "toy color", "Kong|pidan|多格漫=Doglemi", (9, 129)),
        ],
    ),
    (
        ("户外", "Outdoor"),
        [
            (
                "帐篷",
                "Tents",
                "people season color",
                "牧高笛=Mobi Garden|骆驼=Camel|北面=The North Face|挪客=Naturehike",
                (199, 2999),
            ),
            (
                "睡袋",
                "Sleeping Bags",
                "temp bag_filling color",
                "牧高笛=Mobi Garden|挪客=Naturehike|骆驼=Camel|黑冰=Blackice",
                (99, 1999),
            ),
            (
                "登山包",
                "Hiking Backpacks",
                "litres color",
                "始祖鸟=Arc'teryx|小鹰=Osprey|北面=The North Face|凯乐石=Kailas",
                (199, 2499),
            ),
        ],
    ),
    (
        ("厨房", "Kitchen"),
        [
            (
                "磨豆机",
                "Coffee Grinders",
                "burr color",
                "泰摩=Timemore|德龙=De'Longhi|小米=Xiaomi|百胜图=Barsetto",
                (99, 1999),
            ),
            ("锅具", "Cookware", "cm pot", "苏泊尔=Supor|双立人=Zwilling|爱仕达=ASD|酷彩=Le Creuset", (99, 2999)),
            ("刀具", "Knives", "knife pot", "双立人=Zwilling|张小泉=Zhang Xiaoquan|十八子作=Shibazi", (39, 1299)),
            ("茶具", "Tea Sets", "pieces tea_set", "景德镇=Jingdezhen|宜家=IKEA|苏泊尔=Supor", (59, 999)),
        ],
    ),
    (
        ("个护", "Personal Care"),
        [
            (
                "电动牙刷",
                "Electric Toothbrushes",
                "modes color battery",
                "飞利浦=Philips|欧乐B=Oral-B|舒客=Saky|usmile",
                (99, 1299),
            ),
            ("牙刷头", "Brush Heads", "heads head_type", "飞利浦=Philips|欧乐B=Oral-B|usmile", (39, 299)),
            (
                "洗发水",
                "Shampoo",
                "hair ml",
                "海飞丝=Head & Shoulders|潘婷=Pantene|施华蔻=Schwarzkopf|阿道夫=Adolph",
                (29, 159),
            ),
        ],
    ),
    (
        ("办公", "Office"),
        [
            ("笔记本", "Notebooks", "paper paper_size color", "国誉=KOKUYO|得力=Deli|Moleskine|晨光=M&G", (9, 199)),
            ("钢笔", "Fountain Pens", "nib color", "百乐=Pilot|凌美=LAMY|英雄=Hero|派克=Parker", (49, 1599)),
            ("墨水", "Ink", "color ml", "百乐=Pilot|凌美=LAMY|英雄=Hero|写乐=Sailor", (19, 199)),
        ],
    ),
]

# sub-category (zh) -> the sub-categories of its complements ("bought together")
COMPLEMENTS = {
    "手机": ["手机壳", "充电器"],
    "平板": ["充电器"],
    "智能手表": ["充电器"],
    "咖啡": ["磨豆机"],
    "茶叶": ["茶具"],
    "台灯": ["灯泡"],
    "跑鞋": ["运动袜"],
    "纸尿裤": ["湿巾"],
    "奶瓶": ["湿巾"],
    "口红": ["卸妆水"],
    "眼影": ["卸妆水"],
    "猫粮": ["猫砂"],
    "狗粮": ["宠物玩具"],
    "帐篷": ["睡袋"],
    "钢笔": ["墨水"],
    "电动牙刷": ["牙刷头"],
    "锅具": ["刀具"],
    "床单": ["枕头"],
}


def _pairs(spec: str) -> list[tuple[str, str]]:
    return [tuple(p.split("=", 1)) if "=" in p else (p, p) for p in spec.split("|")]


@dataclass(frozen=True)
class Sub:
    index: int
    top: tuple[str, str]  # (zh, en)
    name: tuple[str, str]  # (zh, en)
    attrs: tuple[str, ...]
    brands: tuple[tuple[str, str], ...]
    price: tuple[int, int]

    def path(self, lang: str) -> str:
        i = 0 if lang == "zh" else 1
        return f"{self.top[i]} > {self.name[i]}"


SUBS = [
    Sub(i, top, (zh, en), tuple(attrs.split()), tuple(_pairs(brands)), price)
    for i, (top, zh, en, attrs, brands, price) in enumerate((top, *sub) for top, subs in TAXONOMY for sub in subs)
]
SUB_BY_ZH = {s.name[0]: s for s in SUBS}
ATTR_VALUES = {k: _pairs(v[2]) for k, v in ATTRIBUTES.items()}


def top_category(path: str) -> str:
    """The canonical (English) top-level category of a category path in either language."""
    head = path.split(">")[0].strip()
    for (zh, en), _ in TAXONOMY:
        if head in (zh, en):
            return en
    raise ValueError(f"not a sample category: {path!r}")


def sub_category(path: str) -> str:
    """The canonical (English) sub-category of a category path in either language."""
    leaf = path.split(">")[-1].strip()
    for s in SUBS:
        if leaf in s.name:
            return s.name[1]
    raise ValueError(f"not a sample category: {path!r}")


# ---- products ----------------------------------------------------------------------------------


@dataclass
class Product:
    item_id: str
    sub: Sub
    lang: str  # 'zh' | 'en'
    brand: str  # in the product's language
    series: str
    attrs: list[tuple[str, int]]  # (attribute, value index)
    price: float
    complement: str | None = None

    def li(self) -> int:
        return 0 if self.lang == "zh" else 1

    def noun(self) -> str:
        return self.sub.name[self.li()]

    def values(self) -> list[str]:
        return [ATTR_VALUES[a][v][self.li()] for a, v in self.attrs]

    def attribute_map(self) -> dict[str, str]:
        return {ATTRIBUTES[a][self.li()]: ATTR_VALUES[a][v][self.li()] for a, v in self.attrs}


def _cap(words: str) -> str:
    return " ".join(w[:1].upper() + w[1:] if w.islower() else w for w in words.split(" "))


def product_title(p: Product) -> str:
    vals = p.values()
    if p.lang == "zh":
        return " ".join([p.brand, p.series, vals[0], p.noun(), *vals[1:]])
    rest = "".join(f", {_cap(v)}" for v in vals[1:])
    return f"{p.brand} {p.series} {_cap(vals[0])} {p.noun()}{rest}"


_ZH_INTRO = [
    "{b}{n}，为日常使用精心打造。",
    "这款{b}{n}兼顾颜值与品质。",
    "{b}出品的{n}，细节做工扎实。",
    "{b}{n}口碑热销，回购率高。",
    "简约耐看的{b}{n}，百搭不挑人。",
]
_ZH_ATTR = ["{k}为{v}，{x}。", "{k}：{v}。", "采用{v}设计（{k}），{x}。", "这一款的{k}是{v}。"]
_ZH_BENEFIT = ["满足多种需求", "日常使用更安心", "品质看得见", "用起来更顺手"]
_ZH_CLOSE = ["支持七天无理由退货。", "适合自用，也适合送礼。", "下单后48小时内发货。", "正品保障&amp;贴心售后。"]
_EN_INTRO = [
    "The {b} {s} {n} is built for everyday use.",
    "A customer favourite: the {b} {n}.",
    "Designed with care &amp; precision, the {b} {s} {n} just works.",
    "Simple, durable and easy to love, this {b} {n} fits right in.",
]
_EN_ATTR = ["{K}: {v}.", "It comes in {v} ({k}).", "The {k} is {v}, {x}.", "Choose it for its {v} {k}."]
_EN_BENEFIT = ["so it suits most needs", "made to last", "a detail you will notice", "which makes daily use easier"]
_EN_CLOSE = ["Free returns within 7 days.", "A great gift &amp; an everyday essential.", "Ships within 48 hours."]


def product_description(p: Product, rng: random.Random) -> str:
    """HTML in the product's language, 2-6 sentences, mentioning every attribute value."""
    esc = lambda s: html.escape(s, quote=False)  # noqa: E731
    zh = p.lang == "zh"
    intro = rng.choice(_ZH_INTRO if zh else _EN_INTRO).format(b=esc(p.brand), s=esc(p.series), n=p.noun())
    attrs = [
        rng.choice(_ZH_ATTR if zh else _EN_ATTR).format(
            k=k, K=k[:1].upper() + k[1:], v=esc(v), x=rng.choice(_ZH_BENEFIT if zh else _EN_BENEFIT)
        )
        for k, v in p.attribute_map().items()
    ]
    close = rng.sample(_ZH_CLOSE if zh else _EN_CLOSE, rng.randint(0, 2))
    layout = rng.randrange(3)
    if layout == 0:
        body = f"<p>{intro}</p><ul>{''.join(f'<li>{a}</li>' for a in attrs)}</ul>"
    elif layout == 1:
        body = f"<p>{intro}<br>{'&nbsp;'.join(attrs)}</p>"
    else:
        body = f"<div><p>{intro}</p><p>{' '.join(attrs)}<br/></p></div>"
    return body + (f"<p>{' '.join(close)}</p>" if close else "")


_ZH_BOOK_A = ["星河", "长夜", "雾港", "山海", "旧城", "远方", "深蓝", "时间"]
_ZH_BOOK_B = ["旅人", "来信", "密码", "之书", "故事", "回声", "简史", "指南"]
_EN_BOOK_A = ["Silent", "Hidden", "Last", "Quiet", "Broken", "Golden", "Practical", "Modern"]
_EN_BOOK_B = ["Harbor", "Orbit", "Letters", "Algorithm", "Garden", "Kingdom", "Guide", "Code"]


def _series(rng: random.Random, sub: Sub, lang: str) -> str:
    if sub.top[0] == "图书":
        if lang == "zh":
            return f"《{rng.choice(_ZH_BOOK_A)}{rng.choice(_ZH_BOOK_B)}》"
        return f"The {rng.choice(_EN_BOOK_A)} {rng.choice(_EN_BOOK_B)}"
    letters = "".join(rng.choice("ABCDEFGHKLMNPRSTWXZ") for _ in range(rng.randint(1, 2)))
    return f"{letters}{rng.randint(1, 99) * 10}"


def _new_product(rng: random.Random, idx: int, sub: Sub) -> Product:
    lang = "zh" if rng.random() < 0.6 else "en"
    brand = rng.choice(sub.brands)[0 if lang == "zh" else 1]
    keys = list(sub.attrs) if len(sub.attrs) <= 3 else rng.sample(sub.attrs, 3)
    attrs = [(a, rng.randrange(len(ATTR_VALUES[a]))) for a in keys]
    lo, hi = sub.price
    price = round(round(lo * (hi / lo) ** rng.random()) - rng.choice([0.0, 0.1, 0.01]), 2)
    return Product(f"P{idx:06d}", sub, lang, brand, _series(rng, sub, lang), attrs, max(price, 1.0))


@dataclass
class Catalog:
    products: list[Product]
    by_sub: list[list[Product]]  # per sub-category, most popular first
    cum_weights: list[list[float]]  # Zipf cumulative weights aligned with by_sub

    def product(self, item_id: str) -> Product:
        return self.products[int(item_id[1:])]


def build_catalog(cfg: SampleConfig) -> Catalog:
    """The clean products (ids P000000..), their popularity order and complements; no I/O."""
    rng = random.Random(f"{cfg.seed}:catalog")
    # every sub-category first, so small shops still cover them all; then sized by a random weight
    sub_weights = [0.5 + rng.random() for _ in SUBS]
    subs = list(SUBS[: cfg.items]) + rng.choices(SUBS, weights=sub_weights, k=max(0, cfg.items - len(SUBS)))
    products = [_new_product(rng, i, s) for i, s in enumerate(subs)]
    by_sub: list[list[Product]] = [[] for _ in SUBS]
    for p in products:
        by_sub[p.sub.index].append(p)
    cum = []
    for items in by_sub:
        rng.shuffle(items)  # popularity rank inside the sub-category
        cum.append(list(itertools.accumulate(1.0 / (r + 1) ** 1.1 for r in range(len(items)))))
    catalog = Catalog(products, by_sub, cum)
    _assign_complements(catalog, rng)
    return catalog


def _assign_complements(catalog: Catalog, rng: random.Random) -> None:
    """Each product of a sub-category with complements gets one: 70% the most popular of its brand in a
    complement sub-category, else a popularity draw there. Linear in items: one brand index per sub."""
    first_of_brand = [_first_of_brand(pool) for pool in catalog.by_sub]  # sub -> English brand -> item_id
    for p in catalog.products:
        targets = [SUB_BY_ZH[z].index for z in COMPLEMENTS.get(p.sub.name[0], [])]
        targets = [t for t in targets if catalog.by_sub[t]]
        if not targets:
            continue
        chosen = rng.choice(targets)
        pool = catalog.by_sub[chosen]
        same_brand = first_of_brand[chosen].get(_brand_pair(p)[1])
        if same_brand is not None and rng.random() < 0.7:
            p.complement = same_brand
        else:
            p.complement = rng.choices(pool, cum_weights=catalog.cum_weights[chosen])[0].item_id


def _first_of_brand(pool: list[Product]) -> dict[str, str]:
    """English brand -> item_id of the first (most popular) product of that brand in `pool`."""
    first: dict[str, str] = {}
    for q in pool:
        first.setdefault(_brand_pair(q)[1], q.item_id)
    return first


def _brand_pair(p: Product) -> tuple[str, str]:
    return next(b for b in p.sub.brands if p.brand in b)


def complement_map(cfg: SampleConfig) -> dict[str, str]:
    """item_id -> its complement's item_id, for the products that have one."""
    return {p.item_id: p.complement for p in build_catalog(cfg).products if p.complement}


# ---- catalog records -----------------------------------------------------------------------------


def _iso(ts_s: float, offset_min: int, millis: bool = False) -> str:
    tz = dt.timezone(dt.timedelta(minutes=offset_min))
    s = dt.datetime.fromtimestamp(ts_s, tz).isoformat(timespec="milliseconds" if millis else "seconds")
    return s.replace("+00:00", "Z")


OFFSETS = [480, 480, 480, 540, 0, -300, -480, 330]  # minutes east of UTC; mostly China


def _record(p: Product, rng: random.Random, updated_s: float) -> dict:
    category = p.sub.path(p.lang)
    if rng.random() < 0.03:  # sloppy separators for ingest to normalise
        category = category.replace(" > ", rng.choice([">", " >  ", "  > "]))
    attributes = p.attribute_map()
    if p.lang == "en" and rng.random() < 0.03:
        attributes = {k.title(): v for k, v in attributes.items()}
    return {
        "item_id": p.item_id,
        "title": product_title(p),
        "description": product_description(p, rng),
        "category": category,
        "brand": p.brand,
        "price": p.price,
        "currency": CURRENCY,
        "attributes": attributes,
        "updated_at": _iso(updated_s, rng.choice(OFFSETS)),
    }


def _versions(p: Product, rng: random.Random, window_start: float) -> list[dict]:
    """1 version for most products, 2-3 for about 10%; the newest has another price and title."""
    n = 1 if rng.random() >= 0.10 else rng.choice([2, 3])
    t = window_start - rng.uniform(5, 200) * 86400
    recs = []
    for v in range(n):
        rec = _record(p, rng, t)
        if v < n - 1:  # older versions: the price before a change, the title before "new model" renaming
            rec["price"] = round(p.price * rng.uniform(1.05, 1.4), 1)
            rec["title"] = rec["title"].replace(p.series, f"{p.series}{'旧款' if p.lang == 'zh' else ' (old model)'}")
        recs.append(rec)
        t += rng.uniform(0.1, 30) * 86400
    return recs


_ZH_PII = "如有疑问请联系客服邮箱 {e} 或致电 {t}。"
_EN_PII = "Questions? Email {e} or call {t}."


def _make_cleanable(rec: dict, kind: str, rng: random.Random, n: int) -> None:
    """Alter a valid record in a way ingest cleans (mask, strip, NFKC) and keeps."""
    zh = any("\u4e00" <= c <= "\u9fff" for c in rec["title"])
    if kind == "pii":
        email = f"service{n}@shop-example.com"
        phone = rng.choice(
            [
                f"138-{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}",
                f"+86 139 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}",
                f"(415) 555-{rng.randint(1000, 9999)}",
            ]
        )
        rec["description"] += f"<p>{(_ZH_PII if zh else _EN_PII).format(e=email, t=phone)}</p>"
    elif kind == "control_chars":
        c = rng.choice(["\x07", "\x1b", "\x0b", "\x1f"])
        rec["description"] = rec["description"].replace("</p>", f"{c}</p>", 1)
        rec["title"] = rec["title"].replace(" ", f" {c}", 1)
    else:  # full_width: ASCII letters and digits as their full-width forms, an ideographic space
        fw = "".join(chr(ord(ch) + 0xFEE0) if ch.isascii() and ch.isalnum() else ch for ch in rec["title"])
        rec["title"] = fw.replace(" ", "\u3000", 1)


def _dirty_catalog(kind: str, rng: random.Random, idx: int, template: Product, window_start: float) -> bytes:
    p = Product(
        f"D{idx:06d}", template.sub, template.lang, template.brand, template.series, template.attrs, template.price
    )
    rec = _record(p, rng, window_start - 86400)
    if kind == "negative_price":
        rec["price"] = -round(p.price, 1)
    elif kind == "missing_title":
        del rec["title"]
    elif kind == "empty_title_after_cleaning":
        rec["title"] = rng.choice(["<p> </p>", "<br/>", "<p>&nbsp;</p>"])
    elif kind == "wrong_type_price":
        rec["price"] = rng.choice(["free", "N/A", "¥"])
    elif kind == "too_long":
        para = "<p>" + html.escape(product_title(p), quote=False) + " " * 3 + "</p>"
        rec["description"] = para * (TOO_LONG_BYTES // len(para.encode()) + 1)
    line = _dumps(rec)
    if kind == "not_json":
        return _truncated(line, 0.5)
    if kind == "invalid_utf8":
        return line.replace(b'"brand":"', b'"brand":"\xff\xfe', 1)
    return line


def _truncated(line: bytes, share: float) -> bytes:
    """The line cut short (not JSON any more), on a character boundary (still valid UTF-8)."""
    text = line.decode("utf-8")
    return text[: int(len(text) * share)].encode("utf-8")


def _dumps(rec: dict) -> bytes:
    return json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _kind_counts(total: int, kinds: tuple[str, ...], rate: float) -> dict[str, int]:
    """round(total * rate) spread evenly over the kinds, at least one of each when rate > 0."""
    if rate <= 0:
        return {k: 0 for k in kinds}
    n = max(len(kinds), round(total * rate))
    return {k: n // len(kinds) + (1 if i < n % len(kinds) else 0) for i, k in enumerate(kinds)}


def catalog_lines(catalog: Catalog, cfg: SampleConfig, window_start: float) -> tuple[list[bytes], dict]:
    """Every catalog line (shuffled, so versions are out of order) and the counts for the manifest."""
    rng = random.Random(f"{cfg.seed}:catalog-records")
    records = [_versions(p, rng, window_start) for p in catalog.products]
    cleanable = {
        k: (0 if cfg.dirty_rate <= 0 else max(2, round(cfg.items * cfg.dirty_rate / 2)))
        for k in CLEANABLE_CATALOG_KINDS
    }
    picks = rng.sample(range(len(records)), min(len(records), sum(cleanable.values())))
    kinds = [k for k, n in cleanable.items() for _ in range(n)]
    for n, (i, kind) in enumerate(zip(picks, kinds)):
        _make_cleanable(records[i][-1], kind, rng, n)
    lines = [_dumps(r) for versions in records for r in versions]
    n_versions = len(lines)
    dirty = _kind_counts(n_versions, DIRTY_CATALOG_KINDS, cfg.dirty_rate)
    dirty["too_long"] = 1
    kinds = [k for k, n in dirty.items() for _ in range(n)]
    lines += [_dirty_catalog(k, rng, i, rng.choice(catalog.products), window_start) for i, k in enumerate(kinds)]
    rng.shuffle(lines)
    counts = {
        "items": len(records),
        "versions": n_versions,
        "multi_version_items": sum(1 for v in records if len(v) > 1),
        "records": len(lines),
        "dirty": dirty,
        "cleanable": cleanable,
    }
    return lines, counts


# ---- users and sessions --------------------------------------------------------------------------


@dataclass
class User:
    user_id: str
    offset_min: int
    sub_cum: list[float]  # cumulative weights over SUBS: 1-3 preferred categories, a little exploring
    activity: float
    last_sub: int | None = None
    last_item: Product | None = None
    pending: str | None = None  # a complement to come back for
    sessions: list = field(default_factory=list)


def _new_user(rng: random.Random, idx: int) -> User:
    tops = [t for t, _ in TAXONOMY]
    n_pref = rng.choices([1, 2, 3], weights=[0.3, 0.45, 0.25])[0]
    preferred = rng.sample(range(len(tops)), n_pref)
    top_weight = {t: w for t, w in zip(preferred, [1.0, 0.55, 0.3])}
    weights = []
    for s in SUBS:
        t = tops.index(s.top)
        w = 0.12 / len(SUBS)  # exploring
        if t in top_weight:
            w += 0.88 * top_weight[t] / sum(top_weight.values()) * (0.3 + rng.random()) / 1.3
        weights.append(w)
    return User(
        f"U{idx:05d}", rng.choice(OFFSETS), list(itertools.accumulate(weights)), activity=rng.lognormvariate(0, 0.9)
    )


def _pick(rng: random.Random, catalog: Catalog, sub: int, like: Product | None = None) -> Product:
    if like is not None and rng.random() < 0.35:  # stay with the brand just looked at
        same = [p for p in catalog.by_sub[sub][:12] if p.brand == like.brand and p is not like]
        if same:
            return rng.choice(same)
    return rng.choices(catalog.by_sub[sub], cum_weights=catalog.cum_weights[sub])[0]


def _query(rng: random.Random, p: Product) -> tuple[str, str, int | None]:
    """A query naming p's sub-category, brand or an attribute value, in p's language."""
    kind = rng.choices(["category", "brand", "attr"], weights=[0.3, 0.35, 0.35])[0]
    noun = p.noun() if p.lang == "zh" else p.noun().lower()
    if kind == "category":
        return kind, noun, None
    if kind == "brand":
        return kind, f"{p.brand} {noun}".lower() if p.lang == "en" else f"{p.brand} {noun}", None
    a = rng.randrange(len(p.attrs))
    value = p.values()[a]
    return kind, f"{value} {noun}".lower() if p.lang == "en" else f"{value} {noun}", a


def _matches(catalog: Catalog, p: Product, kind: str, a: int | None) -> list[Product]:
    pool = [q for q in catalog.by_sub[p.sub.index][:15] if q.lang == p.lang and q is not p]
    if kind == "brand":
        return [q for q in pool if q.brand == p.brand]
    if kind == "attr":
        return [q for q in pool if p.values()[a] in q.values()]
    return pool


def _funnel(
    rng: random.Random, catalog: Catalog, items: list[Product], clicked_already: bool
) -> tuple[list, Product | None]:
    """view -> click -> add_to_cart over `items`; maybe one purchase at the end."""
    events, carted = [], []
    for p in items:
        if not clicked_already:
            events.append(("view", p.item_id, None))
        if clicked_already or rng.random() < 0.55:
            events.append(("click", p.item_id, None))
            if rng.random() < 0.35:
                events.append(("add_to_cart", p.item_id, None))
                carted.append(p)
    bought = None
    if carted and rng.random() < 0.65:
        bought = rng.choice(carted)
        events.append(("purchase", bought.item_id, None))
    return events, bought


def _session(rng: random.Random, catalog: Catalog, u: User) -> list[tuple]:
    """One session's (event_type, item_id, query), updating the user's state."""
    events: list[tuple] = []
    if u.pending and rng.random() < 0.6:
        comp = catalog.product(u.pending)
        events += [("view", comp.item_id, None), ("click", comp.item_id, None)]
        if rng.random() < 0.75:
            events += [("add_to_cart", comp.item_id, None), ("purchase", comp.item_id, None)]
        u.pending = None
        u.last_sub, u.last_item = comp.sub.index, comp
        if rng.random() < 0.5:
            return events
    if u.last_sub is not None and rng.random() < 0.5:
        sub = u.last_sub
    else:
        sub = bisect.bisect_right(u.sub_cum, rng.random() * u.sub_cum[-1])
        sub = min(sub, len(SUBS) - 1)
    if not catalog.by_sub[sub]:
        sub = max(range(len(SUBS)), key=lambda s: len(catalog.by_sub[s]))
    if rng.random() < 0.25:
        target = _pick(rng, catalog, sub)
        kind, query, a = _query(rng, target)
        events.append(("search", None, query))
        others = _matches(catalog, target, kind, a)
        shown = [target] + rng.sample(others, min(len(others), rng.choice([0, 1, 1, 2])))
        more, bought = _funnel(rng, catalog, shown, clicked_already=True)
    else:
        n = 1 + min(int(rng.expovariate(0.45)), 7)
        shown, prev = [], u.last_item if u.last_item and u.last_item.sub.index == sub else None
        for _ in range(n):
            prev = _pick(rng, catalog, sub, prev)
            shown.append(prev)
        more, bought = _funnel(rng, catalog, shown, clicked_already=False)
    events += more
    u.last_sub, u.last_item = sub, shown[-1]
    if bought is not None:
        u.last_item = bought
        if bought.complement:
            if rng.random() < 0.5:  # right away, in the same session
                comp = catalog.product(bought.complement)
                events += [("view", comp.item_id, None), ("click", comp.item_id, None)]
                if rng.random() < 0.7:
                    events += [("add_to_cart", comp.item_id, None), ("purchase", comp.item_id, None)]
                u.last_item = comp
            else:
                u.pending = bought.complement
    return events


# ---- time --------------------------------------------------------------------------------------

_HOUR_WEIGHTS = [1, 0.5, 0.3, 0.2, 0.2, 0.3, 0.8, 2, 3, 2, 1.5, 1.5, 2.5, 2, 1.5, 1.5, 1.5, 2, 2.5, 3, 3.5, 3.5, 3, 2]
_HOUR_CUM = list(itertools.accumulate(_HOUR_WEIGHTS))
MIN_SESSION_GAP_S = 2 * 3600  # well over the 30-minute inactivity rule, so sessions without an id split right


def _gaps(rng: random.Random, n: int) -> list[float]:
    """Seconds from the session start to each event: seconds to minutes apart."""
    out, t = [], 0.0
    for _ in range(n):
        out.append(t)
        t += rng.uniform(5, 40) if rng.random() < 0.5 else rng.uniform(40, 300)
    return out


def _place_sessions(rng: random.Random, u: User, start: float, end: float) -> list[float]:
    """Start times (epoch s) for the user's sessions, in order, inside [start, end), hours or days apart."""
    durations = [offs[-1] for offs in (s[1] for s in u.sessions)]
    days = int((end - start) // 86400)
    draws = []
    for _ in durations:
        hour = bisect.bisect_right(_HOUR_CUM, rng.random() * _HOUR_CUM[-1])
        local = rng.randrange(days) * 86400 + hour * 3600 + rng.uniform(0, 3600)
        draws.append(start + local - u.offset_min * 60)
    draws.sort()
    placed, cursor = [], start
    for t, d in zip(draws, durations):
        t = max(t, cursor)
        if t + d >= end:
            break
        placed.append(t)
        cursor = t + d + MIN_SESSION_GAP_S + rng.uniform(0, 3 * 3600)
    if len(placed) == len(durations):
        return placed
    # too many sessions for random times: space them evenly instead
    gap = (end - start - sum(durations)) / (len(durations) + 1)
    placed, t = [], start + gap / 2
    for d in durations:
        placed.append(t)
        t += d + gap
    return placed


# ---- events ------------------------------------------------------------------------------------


@dataclass
class Event:
    user: User
    session_id: str | None
    event_type: str
    item_id: str | None
    query: str | None
    ts_ms: int
    event_id: str = ""


def generate_events(
    catalog: Catalog, cfg: SampleConfig, n_events: int, start: float, end: float
) -> tuple[list[Event], list[User]]:
    """Exactly n_events clean events (every user gets a session first), sorted by time."""
    rng = random.Random(f"{cfg.seed}:events")
    users = [_new_user(rng, i) for i in range(cfg.users)]
    cum_activity = list(itertools.accumulate(u.activity for u in users))
    cap = cfg.days * 6  # sessions per user, so sessions stay hours apart
    total, n = 0, 0
    while total < n_events:
        u = users[n] if n < len(users) else users[bisect.bisect_right(cum_activity, rng.random() * cum_activity[-1])]
        n += 1
        if len(u.sessions) >= cap:
            u = min(users, key=lambda x: len(x.sessions))
            if len(u.sessions) >= cap:
                raise ConfigError(f"{n_events} events do not fit {cfg.users} users over {cfg.days} days")
        unserved = max(0, len(users) - n)  # users still waiting for their first session keep one event each
        acts = _session(rng, catalog, u)[: max(1, n_events - total - unserved)]
        sid = f"S{rng.getrandbits(48):012x}" if rng.random() < 0.5 else None
        u.sessions.append((acts, _gaps(rng, len(acts)), sid))
        total += len(acts)
    events = []
    for u in users:
        for t0, (acts, offs, sid) in zip(_place_sessions(rng, u, start, end), u.sessions):
            events += [Event(u, sid, et, item, q, int((t0 + o) * 1000)) for (et, item, q), o in zip(acts, offs)]
    events.sort(key=lambda e: (e.ts_ms, e.user.user_id))
    for i, e in enumerate(events):
        e.event_id = f"E{cfg.seed:x}-{i:08d}"
    return events, users


def _ts_value(e: Event, rng: random.Random):
    r = rng.random()
    if r < 0.45:
        return _iso(e.ts_ms / 1000, e.user.offset_min)
    if r < 0.6:
        return _iso(e.ts_ms / 1000, rng.choice([0, 480, -300]), millis=True)
    if r < 0.8:
        return e.ts_ms // 1000
    return e.ts_ms


def event_record(e: Event, rng: random.Random) -> dict:
    rec = {"event_id": e.event_id, "user_id": e.user.user_id}
    if e.session_id:
        rec["session_id"] = e.session_id
    rec["event_type"] = e.event_type
    if e.item_id is not None:
        rec["item_id"] = e.item_id
    if e.query is not None:
        rec["query"] = e.query
    rec["ts"] = _ts_value(e, rng)
    return rec


def _dirty_event(kind: str, rec: dict, rng: random.Random, n: int) -> bytes:
    if kind == "missing_user_id":
        del rec["user_id"]
    elif kind == "unknown_event_type":
        rec["event_type"] = rng.choice(["wishlist", "share", "refund"])
    elif kind == "unparseable_ts":
        rec["ts"] = rng.choice(["yesterday", "2026-02-30T25:61:00+08:00", "not a time", "11/31/2026 10:00"])
    elif kind == "unknown_item_id":
        rec["item_id"] = f"X{n:06d}"
    line = _dumps(rec)
    if kind == "not_json":
        return _truncated(line, 0.67)
    if kind == "invalid_utf8":
        return line.replace(b'"user_id":"', b'"user_id":"\xc3\x28', 1)
    return line


def event_lines(
    events: list[Event], cfg: SampleConfig, n_duplicates: int, dirty: dict[str, int]
) -> list[tuple[int, bytes]]:
    """(ts_ms, line) for every event line, the dirty ones altered and the duplicates added."""
    rng = random.Random(f"{cfg.seed}:event-records")
    recs = [event_record(e, rng) for e in events]
    altering = [k for k in DIRTY_EVENT_KINDS if k != "duplicate_event"]
    candidates = rng.sample(range(len(events)), min(len(events), sum(dirty[k] for k in altering) + n_duplicates))
    altered: dict[int, bytes] = {}
    pos = 0
    for kind in altering:
        for _ in range(dirty[kind]):
            i = candidates[pos]
            pos += 1
            if kind == "unknown_item_id" and "item_id" not in recs[i]:
                recs[i].pop("query", None)
                recs[i]["event_type"] = "view"
            altered[i] = _dirty_event(kind, recs[i], rng, pos)
    duplicated = set(candidates[pos : pos + n_duplicates])
    lines = []
    for i, (e, rec) in enumerate(zip(events, recs)):
        line = altered.get(i) or _dumps(rec)
        lines.append((e.ts_ms, line))
        if i in duplicated:
            lines.append((e.ts_ms, line))
    return lines


# ---- writing -----------------------------------------------------------------------------------


def _write_gz(path: Path, lines: list[bytes]) -> None:
    """Atomically, byte-for-byte reproducible (gzip mtime 0, no file name in the header)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(line + b"\n" for line in lines)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(gzip.compress(data, compresslevel=6, mtime=0))
    os.replace(tmp, path)


def validate(cfg: SampleConfig) -> dt.date:
    try:
        end = dt.date.fromisoformat(cfg.end_date)
    except ValueError:
        raise ConfigError(f"end date is not YYYY-MM-DD: {cfg.end_date!r}") from None
    if cfg.items < len(SUBS):
        raise ConfigError(f"--items must be at least {len(SUBS)} (one per sub-category), got {cfg.items}")
    if cfg.users < 1 or cfg.days < 1:
        raise ConfigError("--users and --days must be at least 1")
    if cfg.events < 2 * cfg.users:
        raise ConfigError(f"--events must be at least 2 x --users ({2 * cfg.users}), got {cfg.events}")
    if cfg.events > cfg.users * cfg.days * 20:
        raise ConfigError(
            f"--events {cfg.events} do not fit {cfg.users} users over {cfg.days} days (sessions stay hours apart)"
        )
    if not 0 <= cfg.dirty_rate <= 0.2:
        raise ConfigError(f"--dirty-rate must be between 0 and 0.2, got {cfg.dirty_rate}")
    return end


def _summarise_events(events: list[Event]) -> dict:
    by_type = {t: 0 for t in ("view", "click", "add_to_cart", "purchase", "search")}
    queries: dict[str, int] = {}
    sessions: dict[str, list[int]] = {}
    for e in events:
        by_type[e.event_type] += 1
        if e.query is not None:
            queries[e.query] = queries.get(e.query, 0) + 1
        if e.session_id:
            sessions.setdefault(e.session_id, []).append(e.ts_ms)
    crossing = sum(1 for ts in sessions.values() if ts[0] // 86_400_000 != ts[-1] // 86_400_000)
    return {
        "by_type": by_type,
        "with_session_id": sum(1 for e in events if e.session_id),
        "distinct_queries": len(queries),
        "queries_searched_3_times_or_more": sum(1 for n in queries.values() if n >= 3),
        "sessions_with_id_crossing_midnight_utc": crossing,
    }


def write_sample(out_dir: str | os.PathLike, cfg: SampleConfig = SampleConfig()) -> dict:
    """Write the catalog, the daily event files and the manifest under out_dir; return the manifest."""
    end = validate(cfg)
    out = Path(out_dir)
    first = end - dt.timedelta(days=cfg.days - 1)
    start_s = dt.datetime.combine(first, dt.time(), dt.UTC).timestamp()
    end_s = start_s + cfg.days * 86400

    catalog = build_catalog(cfg)
    cat_lines, cat_counts = catalog_lines(catalog, cfg, start_s)
    _write_gz(out / CATALOG_FILE, cat_lines)

    dirty = _kind_counts(cfg.events, DIRTY_EVENT_KINDS, cfg.dirty_rate)
    events, users = generate_events(catalog, cfg, cfg.events - dirty["duplicate_event"], start_s, end_s)
    lines = event_lines(events, cfg, dirty["duplicate_event"], dirty)
    files = _write_days(out / EVENTS_DIR, lines, first, cfg.days)

    manifest = {
        "config": asdict(cfg),
        "window": {"first_day": first.isoformat(), "last_day": end.isoformat()},
        "catalog": {
            "path": CATALOG_FILE,
            **cat_counts,
            "categories": len(TAXONOMY),
            "sub_categories": len(SUBS),
            "items_with_complement": sum(1 for p in catalog.products if p.complement),
        },
        "events": {
            "files": files,
            "lines": len(lines),
            "users": len({e.user.user_id for e in events}),
            "sessions": sum(len(u.sessions) for u in users),
            "dirty": dirty,
            **_summarise_events(events),
        },
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return manifest


def _write_days(events_dir: Path, lines: list[tuple[int, bytes]], first: dt.date, days: int) -> list[str]:
    per_day: list[list[bytes]] = [[] for _ in range(days)]
    first_ms = int(dt.datetime.combine(first, dt.time(), dt.UTC).timestamp() * 1000)
    for ts_ms, line in lines:
        per_day[(ts_ms - first_ms) // 86_400_000].append(line)
    names = [f"events-{first + dt.timedelta(days=d)}.jsonl.gz" for d in range(days)]
    if events_dir.is_dir():  # files of an earlier run with another window would be read as input
        for old in events_dir.glob("events-*.jsonl.gz"):
            if old.name not in names:
                old.unlink()
    for name, day_lines in zip(names, per_day):
        _write_gz(events_dir / name, day_lines)
    return [f"{EVENTS_DIR}/{n}" for n in names]
