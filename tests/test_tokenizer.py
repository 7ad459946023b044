import pytest
from hypothesis import given, strategies as st

from nanogpt_tg.tokenizer import CharTokenizer

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n"


def test_vocab_is_sorted_unique_characters():
    tok = CharTokenizer.from_text(TEXT)
    assert tok.itos == sorted(set(TEXT))
    assert tok.vocab_size == len(set(TEXT))
    assert tok.encode("\n ")[:2] == [0, 1]  # '\n' < ' ' sort first


@given(st.text(alphabet=sorted(set(TEXT)), max_size=200))
def test_round_trip_exact(s):
    tok = CharTokenizer.from_text(TEXT)
    assert tok.decode(tok.encode(s)) == s


def test_round_trip_any_unicode():
    text = "héllo wörld — 日本語 🙂\r\n\t"
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text


def test_unknown_character_is_a_value_error_naming_it():
    tok = CharTokenizer.from_text(TEXT)
    with pytest.raises(ValueError, match=r"'Z'.*'é'|'é'.*'Z'") as e:
        tok.encode("aZé")
    assert not isinstance(e.value, KeyError)


def test_meta_round_trip_and_nanogpt_dict_form():
    tok = CharTokenizer.from_text(TEXT)
    assert CharTokenizer.from_meta(tok.meta()).itos == tok.itos
    nanogpt_meta = {"vocab_size": tok.vocab_size, "itos": dict(enumerate(tok.itos)), "stoi": tok.stoi}
    assert CharTokenizer.from_meta(nanogpt_meta).itos == tok.itos
