"""Every training default in one place, with the reason for it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class TrainConfig:
    dataset: str = "fashion-mnist"  # fashion-mnist | mnist | cifar10 | folder:PATH
    data_dir: str | None = None  # default: the Debian package's folder, then the download cache
    image_size: int = 28  # folder data sets are resized to this square size
    preset: str = "default"  # a name in layers.PRESETS
    layers: str | None = None  # a layer SPEC or a .json/.yaml file of stages; overrides preset
    dropout: float = 0.0
    epochs: int = 30  # ~94 % on Fashion-MNIST for the default preset
    time_budget: float | None = None  # seconds; stop before an epoch that would overrun it
    schedule: str = "steps"  # OneCycle over the epochs; "time": over the time budget (schedule.py)
    bf16: bool = False  # bfloat16 autocast on CPU too: ~2x faster where AMX/AVX-512-BF16 exist
    batch_size: int = 128
    lr: float = 3e-3  # OneCycle peak for AdamW
    weight_decay: float = 5e-2  # AdamW's decoupled decay
    label_smoothing: float = 0.1  # smoother logits; temperature scaling corrects the calibration
    crop_pad: int = 2  # random-crop padding in pixels (28x28 objects move by up to 2 px)
    flip: bool | None = None  # None: the data set decides (no flips for digits)
    erase: float = 0.0  # random-erasing probability per image (augment.py); 0.5 for the long run
    scale: float = 0.0  # random zoom of up to +-this fraction about the centre
    photo: float = 0.0  # probability per image of photo traces (background, blur, noise, JPEG)
    ema: float = 0.0  # per-step decay of an exponential moving average of the weights (0: off);
    # the average is validated and kept in best.pt: smoother than the last step's weights
    val_size: int = 5000  # held out of the training set for model selection and calibration
    limit_train: int | None = None  # use only the first N training images (tests, dry runs)
    limit_test: int | None = None
    seed: int = 0
    threads: int | None = None  # torch intra-op threads on CPU; None = PyTorch's choice
    out_dir: str = "runs/fashion-mnist"
    resume: bool = False  # continue from out_dir/last.pt
    allow_download: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


DRY_RUN = dict(epochs=1, limit_train=2000, limit_test=1000, val_size=500, preset="small")
