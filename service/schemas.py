"""Request and response models: they are the OpenAPI spec, error responses included."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


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


class Prediction(BaseModel):
    label: str
    index: int = Field(description="Class index in the model's label list.")
    probability: float = Field(ge=0, le=1, description="Calibrated softmax probability.")


class Framing(BaseModel):
    """The "trim" framing policy's findings (models whose input asks for it)."""

    policy: str = Field(description="The model's framing policy: trim.")
    applied: bool = Field(description="False: the picture already looked like the training data.")
    background: Literal["light", "dark"] = Field(description="The background, from the border.")
    background_range: list[float] = Field(
        description="Darkest and brightest level (0-255) of the fitted background surface: "
        "uneven light shows as a wide range."
    )
    noise: float = Field(description="Noise of the background, in levels (robust sigma).")
    tolerance: float = Field(description="Ink above the background, in levels, kept as object.")
    reason: str | None = Field(None, description="Why the policy did less than all its steps.")
    box: list[int] | None = Field(
        None, description="The object's box in the picture's pixels: x0, y0, x1, y1 (end excl.)."
    )
    object_size: list[int] | None = Field(
        None, description="[width, height] of the object in the network input, centred on black."
    )
    negated: bool | None = Field(None, description="Light background: the picture was negated.")
    sharpened: bool | None = Field(None, description="Sharpened after shrinking, as the data was.")
    gain: float | None = Field(None, description="Contrast gain bringing the brightest ink to 255.")
    centred: bool | None = None


class Preprocessing(BaseModel):
    """What the service did to the picture before the network saw it."""

    format: str = Field(description="Format sniffed from the bytes, e.g. PNG, JPEG.")
    width: int = Field(description="Original width in pixels (after EXIF rotation).")
    height: int = Field(description="Original height in pixels (after EXIF rotation).")
    mode: str = Field(description="Original Pillow mode, e.g. L, RGB, RGBA, P, I;16.")
    frames: int = Field(description="Frames in the file; only the first is used.")
    exif_rotated: bool = Field(description="EXIF orientation was applied.")
    alpha_flattened: bool = Field(description="Transparency composited over the background.")
    inverted: bool = Field(description="Light background inverted to match the model's dark one.")
    scaled_16bit: bool = Field(description="16-bit samples scaled to 8 bits.")
    resize: str = Field(description="How the picture was fitted to the input size.")
    framing: Framing | None = Field(
        None, description="Background flattened, object trimmed, sized and centred (see Framing)."
    )


class Grid(BaseModel):
    rows: int
    cols: int
    tile: int = Field(description="Tile edge in pixels (each channel is one tile).")
    channels: int


class FeatureMap(BaseModel):
    layer: str
    kind: Literal["conv", "pool"]
    kernel: int
    stride: int
    padding: int
    shape: list[int] = Field(description="[channels, height, width] of the activation.")
    grid: Grid
    image: str = Field(description="PNG data URL: one tile per channel, row by row.")


class Cam(BaseModel):
    label: str
    index: int
    image: str = Field(description="PNG data URL: class-activation heat map over the picture.")


class PictureResult(BaseModel):
    predictions: list[Prediction] = Field(description="Top-k classes, most probable first.")
    preprocessing: Preprocessing
    input_image: str | None = Field(
        None, description="PNG data URL of the exact pixels the network saw (input_image=true)."
    )
    feature_maps: list[FeatureMap] | None = None
    cam: Cam | None = None


class ClassifyResponse(BaseModel):
    model: ModelRef
    results: list[PictureResult] = Field(description="One entry per picture, in request order.")


class ClassifyJSON(BaseModel):
    images: list[str] = Field(
        min_length=1,
        description="Pictures as base64 strings or data URLs (data:image/png;base64,...).",
    )


class InputInfo(BaseModel):
    height: int
    width: int
    channels: int
    mode: Literal["L", "RGB"]
    resize: Literal["pad", "crop", "stretch"]
    background: Literal["dark", "light"] | None


class LayerInfo(BaseModel):
    name: str
    output: str
    kind: Literal["conv", "pool"]
    kernel: int
    stride: int
    padding: int
    channels: int
    height: int
    width: int


class ModelInfo(BaseModel):
    name: str
    version: str
    default: bool = Field(description="Served by POST /v1/classify.")
    labels: list[str]
    input: InputInfo
    layers: list[LayerInfo]
    temperature: float
    metrics: dict[str, Any] = Field(description="Measured test accuracy, calibration error, data.")
    created: str | None
    recipe: dict[str, Any] = Field(description="Architecture and training settings.")


class ModelList(BaseModel):
    default: str
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    status: Literal["ready"] = "ready"
    models: list[str]
