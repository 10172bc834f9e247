"""Each loss owns its options: inline options in --loss, their canonical text, the alias flags, the errors."""

import numpy as np
import pytest

from sflnet import losses
from sflnet.errors import SflnetError
from sflnet.losses import LossSettings, Term, canonical, make_objective, options_of, parse, resolve
from sflnet.training.config import TrainOptions


@pytest.mark.parametrize("text, expected", [
    ("pl+sfl", "pl+sfl"),                                                    # unchanged: old run folders
    ("pl+100*fft+ssim", "pl+100*fft+ssim"),
    ("pl+0.5*stft(window=8, stride=2, window_fn=rect)", "pl+0.5*stft(window=8,stride=2,window_fn=rect)"),
    ("pl+stft( stride = 2 , window = 8 )", "pl+stft(window=8,stride=2)"),    # declaration order
    ("pl+stft(window=16,stride=4)", "pl+stft"),                              # defaults left out
    ("pl+stft()", "pl+stft"),
    ("500*ssim+3.5*sfl(weights=100:10:10)", "500*ssim+3.5*sfl"),
    ("500*ssim+3.5*sfl(weights=1:2.5:1e-3)", "500*ssim+3.5*sfl(weights=1:2.5:0.001)"),
    ("1*sfl(sigmas=1:2,weights=1:1)", "1*sfl(sigmas=1:2,weights=1:1)"),
    ("pl+stft(phase_weight=0.5)", "pl+stft(phase_weight=0.5)"),
])
def test_canonical_text_with_options_round_trips(text, expected):
    assert canonical(text) == expected
    assert canonical(expected) == expected
    assert parse(expected) == parse(text)


def test_options_are_typed_and_reach_the_loss():
    objective = make_objective("pl+0.5*stft(window=8,stride=2,window_fn=rect,phase_weight=3)+sfl(sigmas=1:2,"
                               "weights=4:5)")
    stft, sfl = objective.losses["stft"], objective.losses["sfl"]
    assert (stft.window, stft.stride, stft.window_fn, stft.phase_weight) == (8, 2, "rect", 3.0)
    assert sfl.sigmas == (1.0, 2.0) and sfl.weights == (4.0, 5.0) and sfl.columns == ("sfl_1", "sfl_2")
    assert objective.terms[1] == Term("stft", 0.5, {"window": 8, "stride": 2, "window_fn": "rect",
                                                    "phase_weight": 3.0})


def test_an_inline_option_computes_what_the_alias_flag_computes():
    rng = np.random.default_rng(5)
    recon, target = rng.uniform(-1, 1, (2, 3, 12, 12)), rng.uniform(-1, 1, (2, 3, 12, 12))
    inline = make_objective("pl+stft(window=8,window_fn=rect)")
    flags = make_objective("pl+stft", LossSettings(stft_window=8, stft_window_fn="rect"))
    assert inline.expression == flags.expression == "pl+stft(window=8,window_fn=rect)"
    a, b = inline.forward(recon, target, 2), flags.forward(recon, target, 2)
    assert float(a["stft"][0]) == float(b["stft"][0])
    assert np.array_equal(inline.backward(), flags.backward())


@pytest.mark.parametrize("text, named", [
    ("pl+stft(windw=8)", ["stft", "'windw'", "window, stride"]),             # unknown name
    ("pl+l1(eps=1)", ["l1", "'eps'", "no options"]),
    ("pl+stft(window=8.5)", ["stft", "window=8.5", "whole number"]),          # wrong type
    ("pl+stft(phase_weight=big)", ["stft", "phase_weight=big", "finite number"]),
    ("pl+sfl(weights=1:x:3)", ["sfl", "weights=1:x:3", "':'"]),
    ("pl+stft(window=1)", ["stft", "window=1", ">= 2"]),                      # out of range
    ("pl+stft(stride=0)", ["stft", "stride=0", ">= 1"]),
    ("pl+stft(window_fn=box)", ["stft", "window_fn=box", "hann, rect"]),
    ("pl+stft(phase_weight=-1)", ["stft", "phase_weight=-1", ">= 0"]),
    ("pl+sfl(sigmas=1:-2,weights=1:1)", ["sfl", "sigmas=1:-2", "> 0"]),
    ("pl+sfl(sigmas=1:1,weights=1:1)", ["sfl", "sigmas=1:1", "distinct"]),
    ("pl+sfl(sigmas=1:2)", ["sfl", "sigmas", "weights", "one weight per sigma"]),
    ("pl+stft(window=8,window=9)", ["'window'", "'stft'", "twice"]),
    ("pl+stft(window)", ["'window'", "'stft'", "OPTION=VALUE"]),
    ("pl+stft(window=8", ["stft(window=8", "NAME(OPTION=VALUE,...)"]),
])
def test_bad_options_get_one_line_naming_the_loss_and_the_option(text, named):
    with pytest.raises(SflnetError) as info:
        resolve(text)
    message = str(info.value)
    assert all(part in message for part in named), message
    assert "\n" not in message


def test_alias_flags_fill_what_the_expression_leaves_and_disagreeing_values_are_refused():
    resolved = resolve("pl+stft(stride=2)", LossSettings(stft_window=8))
    assert resolved.expression == "pl+stft(stride=2)"
    assert resolved.objective == "pl+stft(window=8,stride=2)"
    assert resolved.values["stft"] == {"window": 8, "stride": 2, "window_fn": "hann", "phase_weight": 9.0}
    assert resolved.aliases == {"stft_window": 8, "stft_stride": 2, "stft_window_fn": "hann",
                                "stft_phase_weight": 9.0}
    assert resolve("pl+stft(window=8)", LossSettings(stft_window=8)).objective == "pl+stft(window=8)"
    with pytest.raises(SflnetError, match=r"stft option window=8 but --stft-window 12; give it once"):
        resolve("pl+stft(window=8)", LossSettings(stft_window=12))
    # an alias flag gets its option's own check, as an inline value does (no ValueError from the loss)
    with pytest.raises(SflnetError, match=r"^--stft-window must be a whole number >= 2, got 1 \(the stft option window\)$"):
        resolve("pl+stft", LossSettings(stft_window=1))
    with pytest.raises(SflnetError, match=r"^--stft-window must be a whole number >= 2, got 1 "):
        TrainOptions(loss="pl+stft", stft_window=1).validate()
    # evaluate: the checkpoint's settings are no flags, the inline value wins
    assert resolve("pl+stft(window=8)", LossSettings(stft_window=12), strict=False).values["stft"]["window"] == 8


def test_train_options_fold_inline_options_into_the_alias_fields_and_record_the_objective():
    options = TrainOptions(loss="pl+0.5*sfl(sigmas=1:2,weights=3:4)+stft(window=8)", size=32).validate()
    assert options.loss == "pl+0.5*sfl(sigmas=1:2,weights=3:4)+stft(window=8)"
    assert options.sigmas == (1.0, 2.0) and options.sfl_weights == (3.0, 4.0) and options.stft_window == 8
    assert options.history_columns[4:6] == ["sfl_1", "sfl_2"]
    config = options.to_config()
    assert config["objective"] == "pl+0.5*sfl(sigmas=1:2,weights=3:4)+stft(window=8)"
    again = TrainOptions.from_config(config)                # reads back (validate is idempotent)
    assert again.to_config() == config and again.sigmas == (1.0, 2.0)
    flags = TrainOptions(loss="pl+stft", stft_window=8, stft_stride=2).validate()
    assert flags.loss == "pl+stft" and flags.to_config()["objective"] == "pl+stft(window=8,stride=2)"
    default = TrainOptions().validate().to_config()
    assert default["loss"] == default["objective"] == "pl+sfl"
    with pytest.raises(SflnetError, match="--stft-window 12"):
        TrainOptions(loss="pl+stft(window=8)", stft_window=12).validate()


def test_every_builtin_declares_its_options_and_the_help_lists_them():
    assert [o.name for o in options_of("stft")] == ["window", "stride", "window_fn", "phase_weight"]
    assert [o.alias for o in options_of("sfl")] == ["sigmas", "sfl_weights"]
    assert options_of("pl") == options_of("ssim") == options_of("l1") == options_of("fft") == ()
    assert [o.name for o in options_of("stft_code")] == ["window", "stride", "phase_weight", "eps"]
    rows = losses.help_rows()
    assert set(losses.BUILTIN) <= {term for term, _ in rows}
    # each loss lists its own options under its name (stft and stft_code both have window=16)
    stft_rows = rows[[term for term, _ in rows].index("stft") + 1:]
    assert stft_rows[0] == ("  window=16", stft_rows[0][1]) and "(also --stft-window)" in stft_rows[0][1]
    assert "(also --sigmas)" in dict(rows)["  sigmas=0.8:1.6:3.2"]


def test_loss_names_and_registry_agree():
    assert losses.LOSS_NAMES == losses.loss_names() == tuple(losses.registry())
    assert losses.LOSS_NAMES[:6] == ("pl", "sfl", "l1", "ssim", "fft", "stft")
    assert losses.registry() is losses.LOSSES and "kl" not in losses.REGISTRY
    assert tuple(losses.REGISTRY) == losses.LOSS_NAMES and losses.registry()["stft"] is losses.STFTLoss
    built = losses.REGISTRY["stft"](LossSettings(stft_window=8), {"stride": 2})   # the factories of make_loss
    assert isinstance(built, losses.STFTLoss) and (built.window, built.stride) == (8, 2)
