"""Request and response models: they are the OpenAPI spec, error responses included."""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import BaseModel, Field
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from .spec import CamSpec, InputSpec, LayerSpec


class ErrorBody(BaseModel):
    code: str = Field(examples=["undecodable_image"], description="Machine-readable error code.")
    message: str = Field(description="One sentence saying what is wrong.")


class ErrorResponse(BaseModel):
    error: ErrorBody


ERROR_TEXT = {
    400: "The picture could not be decoded, or the body could not be parsed.",
    401: "An API key is required (CONVSCOPE_API_KEYS is set) and was missing or wrong.",
    404: "No such model, layer or label.",
    408: "The request body did not arrive in time (CONVSCOPE_BODY_TIMEOUT_S).",
    413: "The body is over the byte limit, a picture over the pixel limit, or too many pictures.",
    415: "Not a supported picture (PNG, JPEG, WebP, GIF, BMP, TIFF); sniffed from the bytes.",
    422: "A parameter or the request body is not valid.",
    500: "An unexpected error; the message carries only the request id.",
    503: "The models are still loading.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": ErrorResponse, "description": ERROR_TEXT[c]} for c in codes}


class ModelRef(BaseModel):
    name: str
    version: str


# The results of a classification, declared once: service/classify.py builds exactly these
# dicts (mypy checks every key), the fast lane serialises them as they are, and FastAPI
# validates and documents them through ClassifyResponse.


class Prediction(TypedDict):
    label: str
    index: Annotated[int, Field(description="Class index in the model's label list.")]
    probability: Annotated[float, Field(ge=0, le=1, description="Calibrated probability.")]


class Framing(TypedDict):
    """The "trim" framing policy's findings (models whose input asks for it)."""

    policy: Annotated[str, Field(description="The model's framing policy: trim.")]
    applied: Annotated[
        bool, Field(description="False: the picture already looked like the training data.")
    ]
    background: Annotated[
        Literal["light", "dark"], Field(description="The background, from the border.")
    ]
    background_range: NotRequired[
        Annotated[
            list[float],
            Field(
                description="Darkest and brightest level (0-255) of the fitted background "
                "surface: uneven light shows as a wide range."
            ),
        ]
    ]
    noise: NotRequired[
        Annotated[float, Field(description="Noise of the background, in levels (robust sigma).")]
    ]
    tolerance: NotRequired[
        Annotated[float, Field(description="Ink above the background, in levels, kept as object.")]
    ]
    reason: NotRequired[
        Annotated[str | None, Field(description="Why the policy did less than all its steps.")]
    ]
    box: NotRequired[
        Annotated[
            list[int],
            Field(
                description="The object's box in the picture's pixels: x0, y0, x1, y1 (end excl.)."
            ),
        ]
    ]
    object_size: NotRequired[
        Annotated[
            list[int],
            Field(
                description="[width, height] of the object in the network input, centred on black."
            ),
        ]
    ]
    negated: NotRequired[
        Annotated[bool, Field(description="Light background: the picture was negated.")]
    ]
    sharpened: NotRequired[
        Annotated[bool, Field(description="Sharpened after shrinking, as the data was.")]
    ]
    gain: NotRequired[
        Annotated[float, Field(description="Contrast gain bringing the brightest ink to 255.")]
    ]
    centred: NotRequired[bool]


class Preprocessing(TypedDict):
    """What the service did to the picture before the network saw it."""

    format: Annotated[str, Field(description="Format sniffed from the bytes, e.g. PNG, JPEG.")]
    width: Annotated[int, Field(description="Original width in pixels (after EXIF rotation).")]
    height: Annotated[int, Field(description="Original height in pixels (after EXIF rotation).")]
    mode: Annotated[str, Field(description="Original Pillow mode, e.g. L, RGB, RGBA, P, I;16.")]
    frames: Annotated[int, Field(description="Frames in the file; only the first is used.")]
    exif_rotated: Annotated[bool, Field(description="EXIF orientation was applied.")]
    alpha_flattened: Annotated[
        bool, Field(description="Transparency composited over the background.")
    ]
    inverted: Annotated[
        bool, Field(description="Light background inverted to match the model's dark one.")
    ]
    scaled_16bit: Annotated[bool, Field(description="16-bit samples scaled to 8 bits.")]
    resize: Annotated[str, Field(description="How the picture was fitted to the input size.")]
    framing: NotRequired[
        Annotated[
            Framing,
            Field(
                description="Background flattened, object trimmed, sized and centred (framing "
                "policy trim)."
            ),
        ]
    ]


class Grid(TypedDict):
    rows: int
    cols: int
    tile: Annotated[int, Field(description="Tile edge in pixels (each channel is one tile).")]
    channels: int


class FeatureMap(TypedDict):
    layer: str
    kind: Literal["conv", "pool"]
    kernel: int
    stride: int
    padding: int
    shape: Annotated[list[int], Field(description="[channels, height, width] of the activation.")]
    grid: Grid
    image: Annotated[str, Field(description="PNG data URL: one tile per channel, row by row.")]


CamKind = Literal["exact", "approximate"]
CAM_KIND_TEXT = (
    "exact: a class-activation map (global-average-pooling + linear head); approximate: a "
    "gradient-free map of where the network looked, the same for every class."
)


class Cam(TypedDict):
    label: str
    index: int
    kind: Annotated[CamKind, Field(description=CAM_KIND_TEXT)]
    layer: Annotated[str, Field(description="The stage the map is computed on.")]
    method: Annotated[str, Field(description="How the map is made, in words.")]
    image: Annotated[
        str, Field(description="PNG data URL: class-activation heat map over the picture.")
    ]


class PictureResult(TypedDict):
    predictions: Annotated[
        list[Prediction], Field(description="Top-k classes, most probable first.")
    ]
    preprocessing: Preprocessing
    input_image: Annotated[
        str | None,
        Field(description="PNG data URL of the exact pixels the network saw (input_image=true)."),
    ]
    feature_maps: list[FeatureMap] | None
    cam: Cam | None


class ClassifyResponse(BaseModel):
    model: ModelRef
    results: list[PictureResult] = Field(description="One entry per picture, in request order.")


class ClassifyJSON(BaseModel):
    images: list[str] = Field(
        min_length=1,
        description="Pictures as base64 strings or data URLs (data:image/png;base64,...).",
    )


class ModelInfo(BaseModel):
    name: str
    version: str
    default: bool = Field(description="Served by POST /v1/classify.")
    labels: list[str]
    input: InputSpec  # the contract's own types (service/spec.py), not copies of them
    layers: list[LayerSpec]
    temperature: float
    metrics: dict[str, Any] = Field(description="Measured test accuracy, calibration error, data.")
    created: str | None
    recipe: dict[str, Any] = Field(description="Architecture and training settings.")
    cam: CamSpec | None = Field(description="The class-activation map; null: the model has none.")


class ModelList(BaseModel):
    default: str
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    status: Literal["ready"] = "ready"
    models: list[str]
