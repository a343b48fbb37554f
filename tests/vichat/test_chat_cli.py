from vichat.chat import main


def test_list_shows_availability(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "Gemma-Base" in out and "yes: bundled GGUF" in out
    assert "Bloomz-Chat" in out and "not downloaded" in out


def test_unknown_variant_exits_2_with_a_message(capsys):
    assert main(["--variant", "Nope", "xin chào"]) == 2
    err = capsys.readouterr().err
    assert "unknown variant 'Nope'" in err and "Gemma-Base" in err and "Traceback" not in err


def test_bad_setting_exits_2(capsys):
    assert main(["--variant", "Gemma-Base", "--temperature", "9", "xin chào"]) == 2
    assert "temperature must be in [0.0, 2.0]" in capsys.readouterr().err


def test_streams_a_reply(tiny_models_yaml, capsys):
    assert (
        main(
            [
                "--models",
                str(tiny_models_yaml),
                "--variant",
                "bloom-chat",
                "--temperature",
                "0",
                "--max-new-tokens",
                "8",
                "--stats",
                "Hà Nội",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert captured.out.strip() and "tokens, first after" in captured.err
