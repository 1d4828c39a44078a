"""The convscope API, version 1: classify pictures, show feature maps and CAMs, describe models."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..classify import classify, one_picture, response
from ..deps import (
    DecodersDep,
    DefaultModelDep,
    ModelDep,
    RegistryDep,
    SettingsDep,
    require_api_key,
)
from ..options import AskedDep, Label, find_label, find_layer, options_for, require_cam
from ..registry import LoadedModel
from ..render import cam_overlay, feature_grid
from ..schemas import ClassifyResponse, ModelInfo, ModelList, error_responses
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


def classify_route(model_dep: Any) -> Callable[..., Awaitable[dict[str, Any]]]:
    """The classify endpoint for one way of naming the model (``model_dep``)."""

    async def classify_pictures(
        request: Request,
        model: LoadedModel,
        settings: SettingsDep,
        decoders: DecodersDep,
        asked: AskedDep,
    ) -> dict[str, Any]:
        options = options_for(model.spec, asked)  # a bad option is refused before the upload
        data = await read_pictures(request, settings.max_images)
        pictures = decoders.pictures(data, model.spec.input, display=options.display)
        return response(model, await classify(model, pictures, options))

    classify_pictures.__annotations__["model"] = model_dep
    return classify_pictures


# The same endpoint twice: the default model, and a model named in the path.
for path, name, summary, model_dep in (
    ("/classify", "classify", "Classify pictures with the default model", DefaultModelDep),
    (
        "/models/{name}/classify",
        "classify_with_model",
        "Classify pictures with a named model",
        ModelDep,
    ),
):
    router.add_api_route(
        path,
        classify_route(model_dep),
        methods=["POST"],
        name=name,
        summary=summary,
        response_model=ClassifyResponse,
        responses=PICTURE_ERRORS,
        openapi_extra={"requestBody": REQUEST_BODY},
    )


@router.post(
    "/models/{name}/feature-maps/{layer}",
    name="feature_map_png",
    summary="One layer's feature maps for one picture, as a PNG grid",
    response_class=Response,
    responses={**PNG, **PICTURE_ERRORS},
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def feature_map_png(
    request: Request, model: ModelDep, settings: SettingsDep, decoders: DecodersDep, layer: str
) -> Response:
    spec = find_layer(model.spec, layer)
    picture = one_picture(await read_pictures(request, settings.max_images))
    pictures = decoders.pictures([picture], model.spec.input)
    _, arrays = await model.runtime.run_pictures(pictures, [spec.output])
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
    request: Request,
    model: ModelDep,
    settings: SettingsDep,
    decoders: DecodersDep,
    label: Label = None,
) -> Response:
    require_cam(model.spec)
    index = None if label is None else find_label(model.spec, label)
    picture = one_picture(await read_pictures(request, settings.max_images))
    pictures = decoders.pictures([picture], model.spec.input, display=True)
    prepared, arrays = await model.runtime.run_pictures(pictures, ["probabilities", "cam"])
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
            "input": spec.input,
            "layers": spec.layers,
            "temperature": spec.temperature,
            "metrics": spec.metrics,
            "created": spec.created,
            "recipe": spec.recipe,
            "cam": spec.cam,
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
