"""The convscope API, version 1: classify pictures, show feature maps and CAMs, describe models."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..classify import (
    Options,
    classify,
    find_label,
    find_layer,
    infer,
    one_picture,
    parse_cam,
    parse_layers,
    prepare_all,
    require_cam,
    response,
)
from ..deps import DefaultModelDep, ModelDep, RegistryDep, SettingsDep, require_api_key
from ..registry import LoadedModel
from ..render import cam_overlay, feature_grid
from ..schemas import ClassifyResponse, ModelInfo, ModelList, error_responses
from ..settings import Settings
from ..uploads import REQUEST_BODY, read_pictures

router = APIRouter(
    prefix="/v1",
    tags=["v1"],
    dependencies=[Depends(require_api_key)],
    responses=error_responses(401, 500, 503),
)

PICTURE_ERRORS = error_responses(400, 404, 408, 413, 415, 422)
PNG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "A PNG picture."}
}

TopK = Annotated[int, Query(ge=1, le=1000, description="How many classes to return.")]
FeatureMaps = Annotated[
    str,
    Query(
        description="false, true (every layer) or comma-separated layer names (see the model).",
        max_length=1000,
    ),
]
CamQuery = Annotated[
    str,
    Query(
        description="false, true (each picture's top-1 class) or a label (name or index).",
        max_length=200,
    ),
]
InputImage = Annotated[
    bool,
    Query(description="Also return the exact pixels the network saw, as a PNG data URL."),
]
Label = Annotated[
    str | None,
    Query(description="Label name or index; default: the top-1 class.", max_length=200),
]


async def _classify(
    request: Request,
    model: LoadedModel,
    settings: Settings,
    top_k: int,
    feature_maps: str,
    cam: str,
    input_image: bool,
) -> dict[str, Any]:
    # Options first: a bad parameter is refused before the upload is read.
    layers, cam_class = parse_layers(model.spec, feature_maps), parse_cam(model.spec, cam)
    options = Options(top_k, layers, cam_class, input_image)
    pictures = await read_pictures(request, settings.max_images)
    return response(model, await classify(model, pictures, options, settings.max_pixels))


@router.post(
    "/classify",
    name="classify",
    summary="Classify pictures with the default model",
    response_model=ClassifyResponse,
    responses=PICTURE_ERRORS,
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def classify_default(
    request: Request,
    model: DefaultModelDep,
    settings: SettingsDep,
    top_k: TopK = 5,
    feature_maps: FeatureMaps = "false",
    cam: CamQuery = "false",
    input_image: InputImage = False,
) -> dict[str, Any]:
    return await _classify(request, model, settings, top_k, feature_maps, cam, input_image)


@router.post(
    "/models/{name}/classify",
    name="classify_with_model",
    summary="Classify pictures with a named model",
    response_model=ClassifyResponse,
    responses=PICTURE_ERRORS,
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def classify_with_model(
    request: Request,
    model: ModelDep,
    settings: SettingsDep,
    top_k: TopK = 5,
    feature_maps: FeatureMaps = "false",
    cam: CamQuery = "false",
    input_image: InputImage = False,
) -> dict[str, Any]:
    return await _classify(request, model, settings, top_k, feature_maps, cam, input_image)


@router.post(
    "/models/{name}/feature-maps/{layer}",
    name="feature_map_png",
    summary="One layer's feature maps for one picture, as a PNG grid",
    response_class=Response,
    responses={**PNG, **PICTURE_ERRORS},
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def feature_map_png(
    request: Request, model: ModelDep, settings: SettingsDep, layer: str
) -> Response:
    spec = find_layer(model.spec, layer)
    picture = one_picture(await read_pictures(request, settings.max_images))
    prepared = await prepare_all([picture], model.spec, settings.max_pixels)
    arrays = await infer(model, prepared, [spec.output])
    image, grid = await run_in_threadpool(feature_grid, arrays[spec.output][0])
    headers = {f"X-Grid-{key.title()}": str(value) for key, value in grid.items()}
    return Response(image, media_type="image/png", headers=headers)


@router.post(
    "/models/{name}/cam",
    name="cam_png",
    summary="Class-activation heat map over one picture, as a PNG",
    response_class=Response,
    responses={**PNG, **PICTURE_ERRORS},
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def cam_png(
    request: Request, model: ModelDep, settings: SettingsDep, label: Label = None
) -> Response:
    require_cam(model.spec)
    index = None if label is None else find_label(model.spec, label)
    picture = one_picture(await read_pictures(request, settings.max_images))
    prepared = await prepare_all([picture], model.spec, settings.max_pixels, display=True)
    arrays = await infer(model, prepared, ["probabilities", "cam"])
    if index is None:
        index = int(arrays["probabilities"][0].argmax())
    display = prepared[0].display
    assert display is not None
    image = await run_in_threadpool(cam_overlay, arrays["cam"][0][index], display)
    assert model.spec.cam is not None
    headers = {"X-Class-Index": str(index), "X-Cam-Kind": model.spec.cam.kind}
    return Response(image, media_type="image/png", headers=headers)


def model_info(model: LoadedModel, default: str) -> ModelInfo:
    spec = model.spec
    return ModelInfo.model_validate(
        {
            "name": model.name,
            "version": spec.version,
            "default": model.name == default,
            "labels": spec.labels,
            "input": vars(spec.input),
            "layers": [vars(ly) for ly in spec.layers],
            "temperature": spec.temperature,
            "metrics": spec.metrics,
            "created": spec.created,
            "recipe": spec.recipe,
            "cam": vars(spec.cam) if spec.cam is not None else None,
        }
    )


@router.get("/models", name="list_models", summary="The models this service runs")
def list_models(registry: RegistryDep) -> ModelList:
    default = registry.default_name
    return ModelList(default=default, models=[model_info(m, default) for m in registry])


@router.get(
    "/models/{name}",
    name="get_model",
    summary="One model: labels, input, layers, metrics, version",
    responses=error_responses(404),
)
def get_model(model: ModelDep, registry: RegistryDep) -> ModelInfo:
    return model_info(model, registry.default_name)
