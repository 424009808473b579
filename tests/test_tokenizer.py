"""TextTokenizer: byte-level round trip, no unknown tokens, special tokens never parsed from text."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopllm.tokenizer import TextTokenizer
from shopllm.vocab import DESC_ID, SPECIAL_TOKENS

CORPUS = [
    "无线蓝牙耳机 降噪 长续航",
    "蓝牙耳机 入耳式 运动",
    "机械键盘 青轴 RGB 背光",
    "无线鼠标 静音 办公",
    "Wireless Bluetooth earbuds with noise cancelling",
    "Mechanical keyboard, blue switches, RGB",
    "不锈钢保温杯 500ml 大容量",
    "保温杯 316不锈钢 儿童",
    "Stainless steel water bottle 750 ml",
    "数码 > 耳机",
    "家居 > 厨房 > 水杯",
    "颜色: 黑色; 尺寸: 大号",
    "color: black; size: L",
] * 20

SAMPLES = {
    "chinese": "这款无线蓝牙耳机音质清晰，续航长达三十小时。",
    "english": "Noise-cancelling wireless earbuds, 30 h battery.",
    "mixed": "小米 Xiaomi 14 Pro 手机壳 (黑色) – iPhone兼容？",
    "digits": "0123456789 3.1415 1,000,000 ¥299.00 $19.99",
    "emoji": "超好用👍🏻 love it ❤️‍🔥 家庭👨‍👩‍👧‍👦",
    "newlines": "第一行\n第二行\r\n\tindented  double  spaces\n\n",
    "rare": "𠮷野家 ǅ Ω ﬁ \u200b zero-width \u00a0nbsp",
    "empty": "",
}


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer.train(CORPUS, vocab_size=1000)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip_without_unknown_tokens(tokenizer, name):
    text = SAMPLES[name]
    ids = tokenizer.encode(text)
    assert all(len(SPECIAL_TOKENS) <= i < tokenizer.n_text for i in ids)
    assert tokenizer.decode(ids) == text


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80))
def test_round_trip_any_text(tokenizer, text):
    ids = tokenizer.encode(text)
    assert all(len(SPECIAL_TOKENS) <= i < tokenizer.n_text for i in ids)
    assert tokenizer.decode(ids) == text


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(SPECIAL_TOKENS), st.text(max_size=8)), max_size=8))
def test_special_token_strings_in_text_stay_text(tokenizer, parts):
    text = "".join(parts)
    ids = tokenizer.encode(text)
    assert not any(i < len(SPECIAL_TOKENS) for i in ids)
    assert tokenizer.decode(ids) == text


def test_desc_marker_inside_product_text_is_not_the_control_token(tokenizer):
    ids = tokenizer.encode("说明 <desc> here")
    assert DESC_ID not in ids
    assert "<desc>" in tokenizer.decode(ids)


def test_encode_batch_matches_encode(tokenizer):
    texts = list(SAMPLES.values())
    assert tokenizer.encode_batch(texts) == [tokenizer.encode(t) for t in texts]
    repeated = [*texts, *texts[:3], texts[0]]  # repeats are encoded once and handed back in place
    assert tokenizer.encode_batch(repeated) == [tokenizer.encode(t) for t in repeated]


def test_chinese_compresses_below_one_token_per_char(tokenizer):
    chinese = [t for t in CORPUS if any("\u4e00" <= c <= "\u9fff" for c in t)]
    assert tokenizer.tokens_per_char(chinese) < 0.5  # character-level would be 1.0


def test_save_and_load_give_the_same_ids(tokenizer, tmp_path):
    path = tokenizer.save(tmp_path / "tokenizer.json")
    loaded = TextTokenizer.load(path)
    assert loaded.n_text == tokenizer.n_text
    assert loaded.encode_batch(list(SAMPLES.values())) == tokenizer.encode_batch(list(SAMPLES.values()))
