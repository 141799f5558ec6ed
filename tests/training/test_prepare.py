"""prepare_data's text-length check: truncated answers are refused, other roles warned about per role."""
import pytest

from mdm.data.sample import Role, Sample, TextSegment
from mdm.data.text_tokenizer import TextTokenizer
from mdm.config import load_config
from mdm.training.prepare import check_text_lengths, prepare_data, text_lengths, text_sizes

WORDS = ["red", "blue", "green", "zero", "one", "two", "circle", "square", "star", "left", "right"]


@pytest.fixture(scope="module")
def samples_and_tokenizer():
    samples = [Sample(texts=[TextSegment(Role.CAPTION, f"a {a} {b} on the {c} of a {d} {e}"),
                             TextSegment(Role.ANSWER, f"{a} {e}")])
               for a, b, c, d, e in zip(WORDS, WORDS[3:] + WORDS[:3], WORDS[5:] + WORDS[:5],
                                        WORDS[7:] + WORDS[:7], WORDS[1:] + WORDS[:1])]
    tokenizer = TextTokenizer.train([t.text for s in samples for t in s.texts], 38, None, character_coverage=1.0)
    return samples, tokenizer


def _longest(samples, tokenizer, role):
    return max(n for n, _ in text_sizes(samples, tokenizer)[role])


def test_text_sizes_count_as_encode_fixed_truncates(samples_and_tokenizer):
    samples, tok = samples_and_tokenizer
    for role in ("answer", "caption"):
        n, text = max(text_sizes(samples, tok)[role])
        assert tok.encode_fixed(text, n)[1] == n  # fits: no truncation at its own size
        with pytest.warns(UserWarning, match="truncated"):
            tok.encode_fixed(text, n - 1)


def test_lengths_that_fit_say_nothing(samples_and_tokenizer):
    samples, tok = samples_and_tokenizer
    lens = {role: _longest(samples, tok, role) for role in ("answer", "caption")}
    said = []
    check_text_lengths(text_sizes(samples, tok), lens, log=said.append)
    assert said == []


def test_truncated_answer_is_an_error_naming_the_field_and_the_length_needed(samples_and_tokenizer):
    samples, tok = samples_and_tokenizer
    need = _longest(samples, tok, "answer")
    assert need >= 3  # two words are two pieces at least, so a length of need - 1 truncates some answer
    with pytest.raises(ValueError, match=rf"data\.text_lens\.answer = {need - 1} .* set data\.text_lens\.answer >= "
                                         rf"{need}"):
        check_text_lengths(text_sizes(samples, tok), {"answer": need - 1, "caption": 64}, log=lambda _: None)


def test_truncated_captions_are_counted_in_one_warning(samples_and_tokenizer):
    samples, tok = samples_and_tokenizer
    need = _longest(samples, tok, "caption")
    short = [1 + len(tok.encode(t.text)) for s in samples for t in s.texts if t.role is Role.CAPTION]
    said = []
    lens = {"answer": _longest(samples, tok, "answer"), "caption": need - 1}
    check_text_lengths(text_sizes(samples, tok), lens, log=said.append)
    n_over = sum(n > need - 1 for n in short)
    assert len(said) == 1 and said[0].startswith(f"warning: {n_over} of {len(samples)} training caption texts")
    assert f"is {need} with eos" in said[0]


def test_prepare_data_refuses_a_short_answer_length_before_training_the_vq():
    config = load_config("tiny", ["data.train_size=48", "data.vocab_size=64", "data.vq_steps=100000",
                                  "data.text_lens={answer: 1}"])
    with pytest.raises(ValueError, match=r"training answer texts are longer than data\.text_lens\.answer = 1"):
        prepare_data(config, None, progress=False, log=lambda _: None)  # 100000 VQ steps would take minutes


def test_text_lengths_take_the_longest_answer_by_default_and_the_config_elsewhere(samples_and_tokenizer):
    samples, tok = samples_and_tokenizer
    sizes = text_sizes(samples, tok)
    default = load_config("tiny").data.text_lens
    assert "answer" not in default
    assert text_lengths(sizes, load_config("tiny")) == {"answer": _longest(samples, tok, "answer"),
                                                        "caption": default["caption"]}
    assert text_lengths(sizes, load_config("tiny", ["data.text_lens={answer: 9}"])) == {
        "answer": 9, "caption": _longest(samples, tok, "caption")}


def test_vq_fidelity_warns_when_the_codes_lose_what_the_referee_judges():
    """An untrained VQ-VAE reconstructs no scene right: the report says so, and the log names the remedy."""
    import torch

    from mdm.nn.vq import VQConfig, VQVAE
    from mdm.training.prepare import vq_fidelity

    torch.manual_seed(0)
    vq = VQVAE(VQConfig(downsample=4, codebook_size=8, local=True)).eval()
    for local, remedy in ((False, "data.vq_local=true"), (True, "data.codebook_size")):
        config = load_config("quickstart", ["data.train_size=8", f"data.vq_local={str(local).lower()}"])
        said = []
        report = vq_fidelity(vq, config, [], log=said.append)
        assert report["images"] == 256 and report["referee_all_right"] < 0.95 and report["psnr_db"] < 20
        assert any("warning" in line and remedy in line and "data.vq_steps" in line for line in said)


def test_vq_fidelity_of_a_faithful_tokenizer_says_no_warning(monkeypatch):
    """Reconstructions equal to the scenes: the referee reads all right and nothing is warned about."""
    import mdm.training.prepare as prepare

    config = load_config("quickstart", ["data.train_size=8"])
    monkeypatch.setattr(prepare, "reconstructions", lambda vq, images: images.clone())
    said = []
    report = prepare.vq_fidelity(None, config, [], log=said.append)
    assert report["referee_all_right"] == 1.0 and report["psnr_db"] == float("inf")
    assert len(said) == 1 and "100.0%" in said[0]


def test_psnr_of_a_known_error():
    import torch

    from mdm.nn.vq import psnr

    images = torch.zeros(2, 3, 4, 4)
    assert psnr(images + 0.1, images) == pytest.approx(20.0)


def test_a_batch_larger_than_the_training_set_is_refused_before_stage_0(monkeypatch):
    import mdm.training.prepare as prepare

    monkeypatch.setattr(prepare, "_train_tokenizer", lambda *a, **k: pytest.fail("stage 0 ran"))
    config = load_config("tiny", ["data.train_size=16", "train.batch_size=100000"])
    with pytest.raises(ValueError, match=r"train.batch_size = 100000 is larger than the 16 training samples"):
        prepare_data(config, None, progress=False, log=lambda _: None)


def test_an_image_that_fails_to_decode_after_the_check_is_skipped_and_counted(tmp_path, undecodable_png):
    from PIL import Image

    for cls, colour in (("a", (255, 0, 0)), ("b", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (16, 16), colour).save(tmp_path / cls / f"{i}.png")
    bad = tmp_path / "b" / "1.png"
    undecodable_png(bad, (0, 0, 255))  # right checksums: it passes verify()
    config = load_config("tiny", ["data.name=imagefolder", f"data.path={tmp_path}", "data.train_size=0",
                                  "layout.image_size=16", "train.batch_size=2", "data.vq_steps=2",
                                  "data.codebook_size=16"])
    with pytest.warns(UserWarning, match=r"skipped 1 of 6 images that failed to decode, first: cannot read image "
                                         + str(bad)):
        data = prepare_data(config, None, progress=False, log=lambda _: None)
    assert len(data.train) == 5


def test_the_image_tokenizer_seed_defaults_to_the_data_seed_and_another_seed_trains_another_vq(monkeypatch):
    """``seed`` None reproduces the run's VQ-VAE (data.seed) weight for weight; another seed gives other weights."""
    import torch

    import mdm.training.prepare as prepare

    monkeypatch.setattr(prepare, "vq_fidelity", lambda *a, **k: {})
    config = load_config("tiny", ["data.train_size=8", "data.vq_steps=2", "data.seed=3"])
    images = torch.rand(40, config.layout.image_channels, config.layout.image_size, config.layout.image_size)

    def weights(seed):
        vq = prepare.train_image_tokenizer(images, [], config, None, progress=False, seed=seed)
        return torch.cat([p.detach().flatten() for p in vq.parameters()])

    default = weights(None)
    assert torch.equal(default, weights(3))
    assert not torch.allclose(default, weights(4))
