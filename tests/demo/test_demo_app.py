"""``mdm demo`` before any page is served: the address check, Gradio missing, and the page's tabs (with Gradio)."""

import sys

import pytest

from mdm.cli import main
from mdm.demo.app import check_host, is_loopback, require_gradio


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LocalHost", "127.0.0.2", "::1", "[::1]"])
def test_this_machine_needs_no_flag(host):
    assert is_loopback(host)
    check_host(host, allow_remote=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "example.com", "my-laptop"])
def test_any_other_address_needs_allow_remote(host):
    assert not is_loopback(host)
    with pytest.raises(ValueError, match=f"--host {host} would let other machines use the demo.*--allow-remote"):
        check_host(host, allow_remote=False)
    check_host(host, allow_remote=True)


def test_the_command_refuses_a_remote_host_before_anything_else(tmp_path, capsys):
    assert main(["demo", "--checkpoint", str(tmp_path / "nowhere"), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mdm: error: --host 0.0.0.0 would let other machines") and "--allow-remote" in err
    assert err.count("\n") == 1  # one line
    assert main(["demo", "--checkpoint", str(tmp_path / "nowhere"), "--port", "0"]) == 2
    assert "--port must be in [1, 65535]" in capsys.readouterr().err
    assert main(["demo", "--checkpoint", str(tmp_path / "nowhere"), "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb must be > 0" in capsys.readouterr().err


def test_without_gradio_the_command_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ModuleNotFoundError, installed or not
    with pytest.raises(ModuleNotFoundError, match=r'pip install -e "\.\[demo\]"'):
        require_gradio()
    # checked before the checkpoint is read (it does not exist), and after the address (allowed here)
    assert main(["demo", "--checkpoint", str(tmp_path / "nowhere"), "--host", "0.0.0.0", "--allow-remote"]) == 2
    err = capsys.readouterr().err
    assert err == 'mdm: error: mdm demo needs Gradio, an optional extra: pip install -e ".[demo]" (or pip install ' \
                  '"mdm[demo]")\n'


def test_the_page_has_a_tab_for_each_trained_task_and_lists_the_others(demo_run):
    gr = pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e \".[demo]\")")
    from mdm.demo.actions import DemoSession
    from mdm.demo.app import build_app
    from mdm.pipeline import MDMPipeline

    app = build_app(DemoSession(MDMPipeline.from_pretrained(demo_run)), name="runs/tiny")
    blocks = list(app.blocks.values())
    assert [b.label for b in blocks if isinstance(b, gr.Tab)] == [
        "text → image", "caption an image", "visual question answering", "text → text", "image + caption together"]
    texts = " ".join(b.value for b in blocks if isinstance(b, gr.Markdown))
    assert "`runs/tiny`" in texts and "**class → image** is not available: this checkpoint never trained" in texts
    assert {b.elem_id for b in blocks} >= {"steps", "guidance", "seed", "t2i-gallery", "caption-text"}


def test_a_refused_input_becomes_the_pages_message_and_progress_follows_the_steps():
    gr = pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e \".[demo]\")")
    from mdm.demo.actions import DemoInputError
    from mdm.demo.app import _shown

    reported = []

    def progress(value, desc, unit):
        reported.append((value, desc, unit))

    def button(x, on_step):
        on_step(1, 2)
        on_step(2, 2)
        if x == "bad":
            raise DemoInputError("notes.png is not\nan image")
        raise OSError()

    with pytest.raises(gr.Error) as refused:
        _shown(gr, progress, button, "bad")
    assert refused.value.message == "notes.png is not an image"  # one line
    assert reported == [((1, 2), "sampling", "steps"), ((2, 2), "sampling", "steps")]
    with pytest.raises(gr.Error, match="OSError"):
        _shown(gr, progress, button, "oserror")

    def bug(on_step):
        raise KeyError("a bug keeps its traceback")

    with pytest.raises(KeyError):
        _shown(gr, progress, bug)
