"""What a classification asks for: ``top_k``, ``feature_maps``, ``cam`` and ``input_image``.

Their defaults, limits, documentation and meaning are written here once. The FastAPI routes
take them through ``AskedDep`` (FastAPI validates and words a bad value as a 422); the fast lane
(service/fastlane.py) reads the same names, defaults and limits with ``plain_options`` and hands
anything that is not plainly valid to FastAPI, so the 422 sentences are FastAPI's in both cases.
``options_for`` then resolves layer and label names against the model (404 for unknown ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import Depends, Query

from .errors import NotFound, ServiceError
from .spec import LayerSpec, ModelSpec

TOP = -1  # cam=true: the map of each picture's own top-1 class
MAX_TOP_K = 1000
MAX_LAYERS_TEXT = 1000  # characters of feature_maps
MAX_LABEL_TEXT = 200  # characters of cam (and of the CAM endpoint's label)
FALSE, TRUE = {"", "false", "0", "no", "off"}, {"true", "1", "yes", "on"}
PLAIN_BOOL = {"true": True, "1": True, "false": False, "0": False}  # the lane's unambiguous ones


@dataclass(frozen=True)
class Asked:
    """The query as sent (defaults: a plain top-5 classification)."""

    top_k: int = 5
    feature_maps: str = "false"
    cam: str = "false"
    input_image: bool = False


TopK = Annotated[int, Query(ge=1, le=MAX_TOP_K, description="How many classes to return.")]
FeatureMaps = Annotated[
    str,
    Query(
        description="false, true (every layer) or comma-separated layer names (see the model).",
        max_length=MAX_LAYERS_TEXT,
    ),
]
CamQuery = Annotated[
    str,
    Query(
        description="false, true (each picture's top-1 class) or a label (name or index).",
        max_length=MAX_LABEL_TEXT,
    ),
]
InputImage = Annotated[
    bool,
    Query(description="Also return the exact pixels the network saw, as a PNG data URL."),
]
Label = Annotated[
    str | None,
    Query(description="Label name or index; default: the top-1 class.", max_length=MAX_LABEL_TEXT),
]


async def asked(
    top_k: TopK = Asked.top_k,
    feature_maps: FeatureMaps = Asked.feature_maps,
    cam: CamQuery = Asked.cam,
    input_image: InputImage = Asked.input_image,
) -> Asked:
    return Asked(top_k, feature_maps, cam, input_image)


AskedDep = Annotated[Asked, Depends(asked)]


@dataclass
class Options:
    """A classification's options resolved against its model."""

    top_k: int = Asked.top_k
    layers: list[LayerSpec] = field(default_factory=list)
    cam: int | None = None  # None: no CAM; TOP: top-1 class; else a class index
    input_image: bool = Asked.input_image  # the network input as a PNG data URL

    @property
    def display(self) -> bool:
        """The CAM overlay is drawn on the 224 px display picture; nothing else needs it."""
        return self.cam is not None

    @property
    def outputs(self) -> list[str]:
        extra = ["cam"] if self.cam is not None else []
        return ["probabilities", *(ly.output for ly in self.layers), *extra]


def _shown(text: str) -> str:
    return repr(text[:64])


def find_layer(spec: ModelSpec, name: str) -> LayerSpec:
    layer = spec.layer(name)
    if layer is None:
        names = ", ".join(ly.name for ly in spec.layers)
        raise NotFound(f"model {spec.name} has no layer {_shown(name)} (layers: {names})")
    return layer


def find_label(spec: ModelSpec, label: str) -> int:
    """A label by name (exact, then ignoring case) or by class index."""
    if label in spec.labels:
        return spec.labels.index(label)
    folded = [lb.casefold() for lb in spec.labels]
    if label.casefold() in folded:
        return folded.index(label.casefold())
    if label.isdigit() and int(label) < len(spec.labels):
        return int(label)
    raise NotFound(f"model {spec.name} has no label {_shown(label)}")


def parse_layers(spec: ModelSpec, value: str) -> list[LayerSpec]:
    """``feature_maps``: false | true (every layer) | comma-separated layer names."""
    if value.strip().lower() in FALSE:
        return []
    if value.strip().lower() in TRUE:
        return list(spec.layers)
    names = [n.strip() for n in value.split(",") if n.strip()]
    layers = [find_layer(spec, n) for n in names]
    return list({ly.output: ly for ly in layers}.values())  # once each, in the order asked


def require_cam(spec: ModelSpec) -> None:
    """A model exported without a ``cam`` output answers CAM requests with a 404 saying so."""
    if spec.cam is None:
        raise NotFound(
            f"model {spec.name} has no class-activation map (its metadata says cam: none); "
            "ask for feature maps instead",
            code="no_cam",
        )


def parse_cam(spec: ModelSpec, value: str) -> int | None:
    """``cam``: false | true (each picture's top-1 class) | a label name or index."""
    if value.strip().lower() in FALSE and not value.strip().isdigit():
        return None
    require_cam(spec)
    if value.strip().isdigit():  # "0" and "1" are class indices here, not booleans
        return find_label(spec, value.strip())
    if value.strip().lower() in TRUE:
        return TOP
    return find_label(spec, value.strip())


def options_for(spec: ModelSpec, query: Asked) -> Options:
    layers, cam = parse_layers(spec, query.feature_maps), parse_cam(spec, query.cam)
    return Options(query.top_k, layers, cam, query.input_image)


def plain_options(spec: ModelSpec, query: bytes) -> Options | None:
    """The options of a plain classification (no feature maps, no CAM) from a raw query string,
    or None when FastAPI should see the query: anything repeated, unknown, out of its limits or
    not plainly valid, and any request for feature maps or a CAM."""
    options = Options()
    if not query:
        return options
    try:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return None
    seen = set()
    for key, value in pairs:
        if key in seen:
            return None  # repeated: FastAPI takes the last; leave that to it
        seen.add(key)
        if key == "top_k":
            if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= MAX_TOP_K:
                return None
            options.top_k = int(value)
        elif key == "input_image" and value.lower() in PLAIN_BOOL:
            options.input_image = PLAIN_BOOL[value.lower()]
        elif key == "feature_maps" and len(value) <= MAX_LAYERS_TEXT:
            if value.strip().lower() not in FALSE:
                return None
        elif key == "cam" and len(value) <= MAX_LABEL_TEXT:
            try:
                if parse_cam(spec, value) is not None:
                    return None
            except ServiceError:
                return None
        else:
            return None
    return options
