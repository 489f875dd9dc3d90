"""Knowledge distillation: the original model teaches the student the earlier steps made (or the
user's `[techniques] student`), with Hinton's loss on the user's training data.

The same student is always also trained the very same way (same start, seed, data order, epochs,
augmented images, learning-rate schedule) without the teacher, and both are reported, so the
user sees what distillation bought. The distilled one goes on to export.

On a small training split, `augment=shift|affine` is what lets the teacher teach: it labels a
fresh transform of every image each epoch, so the student matches it on far more inputs than
the split holds (Beyer et al., "Knowledge distillation: a good teacher is patient and
consistent", CVPR 2022). The baseline sees the same transformed images with their hard labels.
"""

from __future__ import annotations

import copy
from typing import Any

from ..errors import CompressError
from ..model import import_entry
from .training import accuracy, fit, options as train_options


def _student(model, opts: dict[str, Any], student_given: bool):
    if opts.get("student"):
        try:
            student = import_entry(opts["student"], "[techniques] student")()
        except CompressError:
            raise
        except Exception as exc:
            raise CompressError(f"[techniques] student {opts['student']!r} raised {type(exc).__name__}: {exc}. "
                                f"Fix: make it return an untrained torch.nn.Module") from None
        return student, "[techniques] student " + opts["student"]
    if not student_given:
        raise CompressError("kd needs a smaller student: put a prune step before it (prune:0.5+kd+...) "
                            "or set [techniques] student = \"module:function\"")
    return model, "the network the earlier steps produced"


def apply(model, opts: dict[str, Any], ctx, student_given: bool) -> tuple[Any, dict[str, Any]]:
    student, origin = _student(model, opts, student_given)
    if opts["epochs"] < 1:
        raise CompressError("kd with epochs=0 trains nothing. Fix: kd:epochs=3 or [techniques] epochs >= 1")
    teacher = ctx.model
    baseline = copy.deepcopy(student)
    train = (opts["epochs"], opts["lr"], opts["batch_size"], opts["seed"])
    extra = train_options(opts)
    distilled = fit(student, ctx, *train, teacher=teacher, temperature=opts["temperature"], alpha=opts["alpha"],
                    **extra)
    plain = fit(baseline, ctx, *train, **extra)
    acc_kd, acc_plain, acc_teacher = accuracy(student, ctx), accuracy(baseline, ctx), accuracy(teacher, ctx)
    return student, {
        "student": origin,
        "augment": extra["augment"],
        "schedule": extra["schedule"],
        "distilled": {**distilled, "accuracy": acc_kd},
        "baseline_without_teacher": {**plain, "accuracy": acc_plain},
        "teacher_accuracy": acc_teacher,
        "gain_over_baseline": None if acc_kd is None or acc_plain is None else acc_kd - acc_plain,
        "accuracy_basis": "torch model on [data] evaluation",
    }
