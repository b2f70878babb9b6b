"""The experiment config: a typed schema in three sections (model, data,
train), read from YAML presets and ``--set section.key=value`` overrides.

Every option lives here and is checked when the config is read (``check``):
types, enums, ranges, cross-field rules, the model builder's options and
their values (the model is built on the meta device, no memory, no time), the
dataset's options. A command that reads a config therefore refuses a bad value
before it opens any dataset or trains anything. Bad input raises ``UserError``
naming the key, what is accepted and the closest valid value. What depends on
the machine (a GPU, a logger's package) is checked when the run starts.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError, choose, did_you_mean
from .files import write_text


@dataclass
class ModelConfig:
    """``name`` plus any option of that model's builder (``vitlab models``; the
    builder's signature is the list, e.g. ``depth``, ``patch_size``, ``stem``),
    checked against the builder when the config is read. ``in_chans`` and
    ``num_classes`` come from the dataset, and so does ``img_size`` when
    neither ``model.img_size`` nor ``data.img_size`` is set."""

    name: str = "vit"  # a name from `vitlab models`
    pretrained: str | None = None  # weights file for vitlab.load_pretrained (fine-tuning)
    keep_head: bool = False  # with pretrained: keep the file's head when its classes fit (default: a new zero head)
    freeze: str | None = None  # 'backbone': only the classification head trains (linear probing)
    freeze_blocks: int = 0  # freeze the patch embedding (position embeddings, tokens) and the first N blocks
    args: dict[str, Any] = field(default_factory=dict)  # the builder's options; a None value keeps the default


@dataclass
class DataConfig:
    name: str = "fashion_mnist"  # cifar10 | cifar100 | fashion_mnist | mnist | tiny_imagenet | imagefolder
    root: str | None = None  # dataset folder; None = the dataset's default place
    download: bool = False  # fetch the official archive if missing (needs a network)
    train_subset: int | None = None  # use only N training images (quick runs)
    val_subset: int | None = None  # use only N validation images
    subset_mode: str = "first"  # 'first' N, or 'random' N chosen with train.seed
    val_fraction: float = 0.1  # imagefolder with one tree: fraction held out for validation
    img_size: int | None = None  # resize to this size (None: the dataset's native size)
    crop_padding: int = 0  # random crop with this zero padding (0: off)
    hflip: bool = False  # random horizontal flip
    auto_augment: str | None = None  # AutoAugment policy: 'cifar10' | 'imagenet' | 'svhn'
    rand_augment: int = 0  # RandAugment: number of ops (0: off)
    rand_augment_magnitude: int = 9
    random_erasing: float = 0.0  # probability
    mixup: float = 0.0  # Mixup alpha (0: off)
    cutmix: float = 0.0  # CutMix alpha (0: off)
    num_workers: int = 0  # DataLoader worker processes
    device_augment: bool | None = None  # in-memory datasets augmented in batches on the training device;
    #                                     None: wherever every configured transform has a batched form
    device_resident: bool | None = None  # in-memory datasets held on the training device (decoded once, no
    #                                      copy per batch); None: on a GPU where they take under half its free memory
    mean: list[float] | None = None  # per-channel normalisation (None: the dataset's own statistics;
    std: list[float] | None = None   # Google's checkpoints were trained with 0.5, 0.5)
    labels: str = "folders"  # imagefolder: 'folders' (a subfolder per class) | 'from_filename' (cat_0001.png) |
    #                          'none' (unlabelled images, for train.objective=mpp)
    bad_images: str = "skip"  # imagefolder: unreadable image files 'skip' (counted, listed) | 'error'
    holdout: float = 0.0  # keep this seeded, stratified fraction of the training set as the validation set


@dataclass
class TrainConfig:
    epochs: int = 10
    steps: int | None = None  # length in optimizer steps instead of epochs (the last epoch may be partial)
    objective: str = "classification"  # classification | mpp (the ViT paper's masked patch prediction, no labels)
    max_seconds: float | None = None  # time budget of training (evaluation not counted): the run stops at the
    #                                   first check after it, saves last.pt and reports; --resume continues it
    batch_size: int = 128
    optimizer: str = "adamw"  # adam | adamw | sgd
    lr: float = 1e-3  # peak learning rate (after warmup)
    min_lr: float = 0.0  # floor of the cosine schedule
    beta1: float = 0.9  # Adam/AdamW
    beta2: float = 0.999
    momentum: float = 0.9  # SGD
    nesterov: bool = False
    weight_decay: float = 0.0  # not applied to biases, norms, position embeddings, class token
    schedule: str = "cosine"  # cosine | linear | step | constant, stepped per optimizer step
    warmup_epochs: float = 0.0  # linear warmup from 0 (fractions allowed)
    warmup_steps: int | None = None  # the warmup in optimizer steps instead (overrides warmup_epochs)
    step_epochs: int = 30  # step schedule: multiply lr by step_gamma every step_epochs
    step_gamma: float = 0.1
    label_smoothing: float = 0.0
    clip_grad: float | None = None  # max global gradient norm
    accum_steps: int = 1  # gradient accumulation
    amp: str = "auto"  # auto (bf16 on CUDA, none elsewhere) | none | bf16 | fp16 (CUDA only, with a grad scaler)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    deterministic: bool | None = None  # deterministic algorithms; None: on the CPU (bit-exact runs), off on CUDA
    tf32: bool | None = None  # TF32 matmuls and convolutions; None: on CUDA unless deterministic
    fused: bool | None = None  # fused optimizer kernels; None: on CUDA
    channels_last: bool | None = None  # convolutional models in channels-last memory; None: on CUDA
    check_every: int | None = None  # optimizer steps between reads of the loss on the host (non-finite check,
    #                                 signals, progress bar); None: 1 on the CPU, 25 on CUDA
    threads: int = 0  # CPU threads for torch (0: torch's default)
    compile: bool = False  # torch.compile the model
    loggers: list[str] = field(default_factory=lambda: ["tensorboard"])  # + wandb | mlflow | neptune
    progress: bool = True  # progress bar
    eval_batch_size: int | None = None  # None: 2 x batch_size


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for YAML: the model's options sit beside ``name``, tuples become lists."""
        d = dataclasses.asdict(self)
        d["model"] = {**{k: v for k, v in d["model"].items() if k != "args"},
                      **{k: _plain(v) for k, v in self.model.args.items()}}
        return d


def _plain(v: Any) -> Any:
    return [_plain(x) for x in v] if isinstance(v, (tuple, list)) else v


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}


def _section_types(section: str) -> dict[str, Any]:
    cls = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}[section]
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Check ``value`` against the annotation ``typ``; ints are accepted where
    floats are expected, strings from the command line are parsed as YAML."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(typ)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(key, value, a)
            except UserError as e:
                errors.append(e)
        raise errors[0]
    if typ is Any:
        return value
    if origin is tuple:  # tuple[int, int] (fixed length) or tuple[int, ...]; YAML gives a list
        items = typing.get_args(typ)
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key {key!r} expects a list, got {value!r}")
        if len(items) == 2 and items[1] is Ellipsis:
            items = (items[0],) * len(value)
        if len(items) != len(value):
            raise UserError(f"config key {key!r} expects a list of {len(items)} values, got {value!r}")
        return tuple(_coerce(key, v, t) for v, t in zip(value, items))
    if origin is list:
        (item,) = typing.get_args(typ)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise UserError(f"config key {key!r} expects a list, got {value!r}")
        return [_coerce(key, v, item) for v in value]
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"config key {key!r} expects true or false, got {value!r}")
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError(f"config key {key!r} expects an integer, got {value!r}")
    if typ is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise UserError(f"config key {key!r} expects a number, got {value!r}")
        if not math.isfinite(number):  # no option takes inf or nan
            raise UserError(f"config key {key!r} expects a finite number, got {value!r}")
        return number
    if typ is str:
        if isinstance(value, str):
            return value
        raise UserError(f"config key {key!r} expects a string, got {value!r}")
    raise TypeError(f"unsupported annotation {typ!r} for {key!r}")


def apply(cfg: Config, key: str, value: Any) -> None:
    """Set a dotted key (``train.lr``) with a type check."""
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name:
        all_keys = [f"{s}.{k}" for s in SECTIONS for k in _section_types(s)]
        raise UserError(f"unknown config key {key!r}{did_you_mean(key, all_keys)}; "
                        f"keys are section.name with sections {', '.join(SECTIONS)}")
    types_ = _section_types(section)
    if section == "model" and (name not in types_ or name == "args"):
        cfg.model.args[name] = value  # checked against the model's builder by check_model()
        return
    if name not in types_:
        raise UserError(f"unknown config key {key!r}{did_you_mean(key, [f'{section}.{k}' for k in types_])}")
    setattr(getattr(cfg, section), name, _coerce(key, value, types_[name]))


_FROM_DATASET = ("in_chans", "num_classes")  # model options the trainer sets from the dataset


def check_model(cfg: Config) -> None:
    """Check ``model:`` against the named model's builder: every key one of its
    options, every value of the option's type; None values are dropped (they
    keep the builder's default)."""
    from .models.registry import model_options, option_types

    name = cfg.model.name
    try:
        options = model_options(name)
    except ValueError as e:  # unknown model: the message names the closest one
        raise UserError(f"model.name: {e}") from None
    types_ = option_types(name)
    settable = [k for k in options if k not in _FROM_DATASET]
    checked = {}
    for key, value in cfg.model.args.items():
        if key in _FROM_DATASET:
            raise UserError(f"model.{key} comes from the dataset (data.name); remove it from the config")
        if key not in options:
            close = did_you_mean(key, settable, quote=False)
            hint = close.replace("(did you mean ", "(did you mean 'model.").replace("?)", "'?)") if close \
                else f"; its options: {', '.join(settable)}"
            raise UserError(f"model {name!r} has no option 'model.{key}'{hint}")
        if value is not None:
            checked[key] = _coerce(f"model.{key}", value, types_[key])
    cfg.model.args = checked


def from_dict(d: dict[str, Any] | None) -> Config:
    """A config from a mapping of sections, checked (``check``)."""
    cfg = _parse(d)
    check(cfg)
    return cfg


def _parse(d: dict[str, Any] | None) -> Config:
    cfg = Config()
    if d is None:
        return cfg
    if not isinstance(d, dict):
        raise UserError("a config file must be a mapping of sections (model:, data:, train:)")
    for section, values in d.items():
        if section not in SECTIONS:
            raise UserError(f"unknown config section {section!r}{did_you_mean(str(section), SECTIONS)}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise UserError(f"config section {section!r} must be a mapping of key: value")
        for name, value in values.items():
            apply(cfg, f"{section}.{name}", value)
    return cfg


# --------------------------------------------------------------------------- presets

def preset_folder() -> Path:
    """The folder of the YAML presets shipped in the package (``vitlab/presets``; the
    repository's ``configs`` links to it)."""
    return Path(str(resources.files(__package__) / "presets"))


def presets() -> dict[str, Path]:
    """The presets shipped with vitlab: name (the file name without ``.yaml``) -> file, by name."""
    return {p.stem: p for p in sorted(preset_folder().glob("*.yaml"))}


def preset_title(path: str | Path) -> str:
    """The first line of a config file's header comment ('' without one)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return ""
    first = next((line.strip() for line in lines if line.strip()), "")
    return first.lstrip("#").strip() if first.startswith("#") else ""


def is_preset_name(config: str | Path) -> bool:
    """A bare name: no folder, no ``.yaml``/``.yml`` ending, and no file or folder of that name here."""
    text = str(config)
    return bool(text) and "/" not in text and "\\" not in text and not text.endswith((".yaml", ".yml")) \
        and not Path(text).exists()


def find_config(config: str | Path) -> Path:
    """The YAML file that ``config`` names: the path itself, or for a bare name (``cifar10_vit``:
    see ``is_preset_name``) the preset of that name shipped with vitlab. ``UserError`` for a bare
    name that is no preset, with the closest one."""
    if not is_preset_name(config):
        return Path(config)
    known = presets()
    name = str(config)
    if name not in known:
        raise UserError(f"no preset named {name!r}{did_you_mean(name, known)}; `vitlab presets` lists them "
                        "(a config file is a path ending in .yaml)")
    return known[name]


def load(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read a YAML config file, or the preset of a bare name (``find_config``), and apply
    ``key=value`` overrides."""
    path = find_config(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; give a YAML config file or a preset's name (`vitlab presets`)")
    if not path.is_file():
        hint = ""
        if path.suffix in (".yaml", ".yml") and path.stem in presets():
            hint = f" (vitlab ships a preset of that name: give `{path.stem}` instead of the path)"
        raise UserError(f"config file not found: {path}{hint}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except _DuplicateKey as e:
        raise UserError(f"cannot read config {path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"cannot read config {path}: invalid YAML{where}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read config {path}: {e}") from None
    if data is None:
        raise UserError(f"config {path} is empty: give model:, data: and train: sections (see `vitlab presets`)")
    cfg = _parse(data)
    apply_overrides(cfg, overrides)
    check(cfg)  # after the overrides: --set model.name=... changes which options exist
    return cfg


def apply_overrides(cfg: Config, overrides) -> None:
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {item!r} (a CONFIG goes before --set)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        apply(cfg, key.strip(), value)


def save(cfg: Config, path: str | Path) -> None:
    """The resolved config as YAML, written atomically."""
    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True))


class _DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(f"key {key!r} is given twice (lines {seen[key] + 1} and "
                                    f"{key_node.start_mark.line + 1}); keep one")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


# --------------------------------------------------------------------------- checks

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "linear", "step", "constant")
AMP = ("auto", "none", "bf16", "fp16")
FREEZE = (None, "backbone")
LOGGERS = ("tensorboard", "wandb", "mlflow", "neptune")
OBJECTIVES = ("classification", "mpp")


def _at_least(key: str, value, low, what: str = "") -> None:
    if value is not None and value < low:
        raise UserError(f"{key} must be {low} or more{what}, got {value}")


def _between(key: str, value, low: float, high: float, high_open: bool = True) -> None:
    if value is not None and not (low <= value < high if high_open else low <= value <= high):
        raise UserError(f"{key} must lie in [{low:g}, {high:g}{')' if high_open else ']'}, got {value:g}")


def _one_of(key: str, value, options) -> None:
    if value not in options:
        raise choose(key, value, options)


def check_train(tc: TrainConfig) -> None:
    """Ranges, enums and rules of the ``train`` section."""
    for key in ("epochs", "batch_size", "accum_steps", "step_epochs"):
        _at_least(f"train.{key}", getattr(tc, key), 1)
    for key in ("steps", "check_every", "eval_batch_size"):
        _at_least(f"train.{key}", getattr(tc, key), 1, " (or null)")
    for key in ("lr", "min_lr", "weight_decay", "momentum", "warmup_epochs", "warmup_steps", "threads"):
        _at_least(f"train.{key}", getattr(tc, key), 0)
    if tc.max_seconds is not None and tc.max_seconds <= 0:
        raise UserError(f"train.max_seconds must be above 0 (seconds), or null (no budget); got {tc.max_seconds}")
    if tc.clip_grad is not None and tc.clip_grad <= 0:
        raise UserError(f"train.clip_grad must be above 0 (a gradient norm), or null (off); got {tc.clip_grad}")
    if tc.step_gamma <= 0:
        raise UserError(f"train.step_gamma must be above 0, got {tc.step_gamma}")
    _between("train.label_smoothing", tc.label_smoothing, 0.0, 1.0)
    _between("train.beta1", tc.beta1, 0.0, 1.0)
    _between("train.beta2", tc.beta2, 0.0, 1.0)
    _one_of("train.optimizer", tc.optimizer, OPTIMIZERS)
    _one_of("train.schedule", tc.schedule, SCHEDULES)
    _one_of("train.amp", tc.amp, AMP)
    _one_of("train.objective", tc.objective, OBJECTIVES)
    if tc.min_lr > tc.lr:
        raise UserError(f"train.min_lr ({tc.min_lr:g}) must not exceed train.lr ({tc.lr:g})")
    if tc.nesterov and tc.optimizer != "sgd":
        raise UserError("train.nesterov applies to train.optimizer=sgd")
    dev = tc.device
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise UserError(f"train.device {dev!r} is not a device; use auto, cpu, cuda or cuda:N")
    if tc.amp == "fp16" and dev == "cpu":
        raise UserError("train.amp=fp16 needs a CUDA device; use bf16 or none on the CPU")
    for name in tc.loggers:
        _one_of("logger in train.loggers", name, LOGGERS)


def sized_model_args(cfg: Config, in_chans: int | None, num_classes: int | None, img_size: int | None) -> dict:
    """The builder arguments of ``cfg.model`` for a dataset of ``in_chans`` channels, ``num_classes``
    classes and ``img_size`` pixels (None: not known yet, the builder's default): its channels and
    classes, and its image size unless ``model.img_size`` or ``data.img_size`` sets one."""
    from .models.registry import model_options

    options = model_options(cfg.model.name)
    args = dict(cfg.model.args)
    for key, value in (("in_chans", in_chans), ("num_classes", num_classes)):
        if key in options and value is not None:
            args[key] = value
    size = args.get("img_size") or cfg.data.img_size or img_size
    if "img_size" in options and size:
        args["img_size"] = size
    return args


def check_mpp_model(model, name: str) -> None:
    """Masked patch prediction needs a Transformer over a patch grid (a ViT or a hybrid)."""
    if not (callable(getattr(model, "grid_size", None)) and hasattr(model, "patch_embed")
            and hasattr(model, "num_prefix_tokens")):
        raise UserError(f"train.objective=mpp needs a ViT or hybrid ViT (patch embeddings to corrupt); "
                        f"{name!r} has none: use train.objective=classification")


def check_model_section(cfg: Config) -> None:
    """The ``model`` section: the builder's options and their types (``check_model``),
    freezing, and the option values, by building the model on the meta device at the
    size the dataset will give it (what the builder refuses is refused now)."""
    check_model(cfg)
    m = cfg.model
    _one_of("model.freeze", m.freeze, FREEZE)
    _at_least("model.freeze_blocks", m.freeze_blocks, 0)
    if m.freeze and m.freeze_blocks:
        raise UserError("give model.freeze=backbone or model.freeze_blocks, not both")
    import torch

    from .data import DATASETS, canonical_name
    from .models import create_model
    from .models.registry import model_options

    options = model_options(m.name)
    for key in _FROM_DATASET:
        if key not in options:
            raise UserError(f"model {m.name!r} cannot be sized for the dataset: it takes no {key}")
    spec = DATASETS[canonical_name(cfg.data.name)]  # an image folder's classes and size are known later
    args = sized_model_args(cfg, spec.in_chans, spec.num_classes, spec.img_size)
    try:
        with torch.device("meta"):
            model = create_model(m.name, **args)
    except (ValueError, TypeError, AssertionError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        word = first.split(" ", 1)[0]
        if word in options:  # the builder names its option: name it as the config does
            raise UserError(f"model.{first} (model {m.name!r})") from None
        raise UserError(f"model {m.name!r}: {first}") from None
    if cfg.train.objective == "mpp":
        check_mpp_model(model, m.name)
        for key in ("mixup", "cutmix"):
            if getattr(cfg.data, key):
                raise UserError(f"data.{key} mixes labels, which train.objective=mpp does not use; set it to 0")
        if cfg.train.label_smoothing:
            raise UserError("train.label_smoothing applies to classification; set it to 0 with train.objective=mpp")
    if m.freeze_blocks:
        blocks = getattr(model, "blocks", None)
        if blocks is None:
            raise UserError(f"model.freeze_blocks needs a model with transformer blocks (a ViT); {m.name!r} has "
                            "none (model.freeze=backbone trains only its head)")
        if m.freeze_blocks > len(blocks):
            raise UserError(f"model.freeze_blocks={m.freeze_blocks} but the model has {len(blocks)} blocks")


def check(cfg: Config) -> None:
    """Every check of a config that needs no data and no device: the data options
    (``vitlab.data.check_options``), the train section, then the model (whose size
    follows from the data)."""
    from .data import check_options

    check_options(cfg.data)
    check_train(cfg.train)
    if cfg.data.labels == "none" and cfg.train.objective != "mpp":
        raise UserError("data.labels=none (unlabelled images) needs train.objective=mpp; a classifier needs labels")
    check_model_section(cfg)
