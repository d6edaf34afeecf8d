"""Every warning reaching a `brainlm` user, raised or logged by the package or logged by transformers, is one line
`brainlm <command>: warning: ...`; other libraries' Python warnings keep their own form."""

import logging
import warnings

import pytest
import torch

from brainlm_hf import metrics
from brainlm_hf.cli import package_warnings

LOAD_REPORT = (
    "\x1b[1mBrainLMForSequenceClassification LOAD REPORT\x1b[0m from: model\nKey | Status |\n----+----+-\n"
    "classifier.bias | MISSING |\n"
)


@pytest.mark.parametrize(
    ("logger", "message", "expected"),
    [
        ("brainlm_hf.modeling_brainlm", "the sdpa backend cannot\nreturn weights", "the sdpa backend cannot return "
         "weights"),
        ("transformers.modeling_utils", LOAD_REPORT, "BrainLMForSequenceClassification LOAD REPORT from: model Key | "
         "Status | classifier.bias | MISSING |"),
    ],
)  # fmt: skip
def test_logged_warnings_print_as_one_prefixed_line(logger, message, expected, capsys, monkeypatch):
    monkeypatch.setattr(logging.getLogger("transformers"), "level", logging.WARNING)  # the tests run it at ERROR
    transformers_handlers = list(logging.getLogger("transformers").handlers)
    with package_warnings("attention"):
        logging.getLogger(logger).warning(message)
        logging.getLogger(logger).info("not a warning")
    assert capsys.readouterr().err == f"brainlm attention: warning: {expected}\n"
    assert logging.getLogger("transformers").handlers == transformers_handlers  # restored afterwards


def test_python_warnings_of_the_package_are_prefixed_whatever_their_category(capsys, monkeypatch):
    others = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, *args, **kwargs: others.append(str(message)))
    with package_warnings("finetune", flag=lambda name: {"shard_multiple": "--shard-multiple"}.get(name)):
        warnings.warn_explicit("use shard_multiple=4", UserWarning, metrics.__file__, 1)
        warnings.warn_explicit("divide by zero", RuntimeWarning, metrics.__file__, 2)
        warnings.warn_explicit("pin_memory is set", UserWarning, torch.__file__, 1)
    assert capsys.readouterr().err.splitlines() == [
        "brainlm finetune: warning: use --shard-multiple=4",
        "brainlm finetune: warning: divide by zero",
    ]
    assert others == ["pin_memory is set"]  # another library's warning goes where it went before
