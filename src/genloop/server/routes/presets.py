"""Named presets of generate settings, per model: save, list, read, delete (the studio's "Presets")."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response

from ...modalities import modalities
from ..deps import Context, ctx, require_token
from ..presets import DuplicatePreset, check_name, preset_dict
from ..schemas import AUTHED, GEN_ID, RUN_ID, WITH_BODY, PresetRequest, errors, unprocessable
from ..services.jobs import run_family, validate

router = APIRouter(tags=["presets"], dependencies=[Depends(require_token)], responses=AUTHED)
PID = Path(pattern=GEN_ID.pattern, description="a preset id (16 hex digits)")
COMMON_KEYS = ("checkpoint", "n", "seed")  # what every model's generate form sets besides its modality's keys


def preset_keys(modality: str, family: type | None = None) -> tuple[str, ...]:
    """The generate-job params a preset of a ``modality`` model (of ``family``, when known) may hold."""
    kind = modalities[modality]
    return (*COMMON_KEYS, *(kind.generate_keys if family is None else kind.generate_keys_of(family)))


@router.post("/v1/presets", status_code=201, responses={**WITH_BODY, **errors(409)})
def create_preset(body: PresetRequest, c: Context = Depends(ctx)) -> dict[str, Any]:
    """Save generate settings under a name for one model. They are checked as a generate job's params are (404 for
    an unknown model, 422 for a bad value or a key the model does not take); 409 when the model already has a
    preset of that name."""
    name = check_name(body.name)
    if not body.params:
        raise unprocessable("a preset needs at least one setting in params")
    family = run_family(c, body.run_id)  # 404 for an unknown run
    modality = str(family.modality)
    keys = preset_keys(modality, family)
    wrong = [k for k in body.params if k not in keys]
    if wrong:
        raise unprocessable(
            f"params.{wrong[0]}: a preset of a {modality} model holds only {', '.join(keys)} (got {', '.join(wrong)})"
        )
    checked = validate(c, "generate", {**body.params, "run_id": body.run_id})
    params = {k: checked[k] for k in body.params if k in checked}  # as given (no defaults added), normalised
    try:
        row = c.presets.add(body.run_id, name, params, body.user)
    except DuplicatePreset as e:
        raise HTTPException(409, str(e)) from None
    return preset_dict(row)


@router.get("/v1/presets")
def list_presets(
    run_id: str | None = Query(None, pattern=RUN_ID.pattern, description="only this model's presets"),
    c: Context = Depends(ctx),
) -> dict[str, Any]:
    """Every preset (by model, then name), or one model's."""
    return {"presets": [preset_dict(r) for r in c.presets.list(run_id)]}


@router.get("/v1/presets/{pid}")
def get_preset(pid: str = PID, c: Context = Depends(ctx)) -> dict[str, Any]:
    return preset_dict(c.presets.get(pid))


@router.delete("/v1/presets/{pid}", status_code=204, response_class=Response)
def delete_preset(pid: str = PID, c: Context = Depends(ctx)) -> Response:
    c.presets.delete(pid)
    return Response(status_code=204)
