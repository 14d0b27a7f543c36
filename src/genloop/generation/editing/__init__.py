"""Editing with a trained diffusion model as the prior, without retraining: inpainting, image-to-image, and
whatever else registers in :data:`~genloop.generation.editing.tasks.EDIT_TASKS`.

``pipe.edit(images, task="inpaint", mask=...)`` (:meth:`~genloop.generation.pipelines.DiffusionPipeline.edit`)
is the way in; :mod:`.tasks` says how a task plugs in, :mod:`.inputs` how inputs are read and resized.
"""

from .base import EditContext, EditTask
from .editor import EditOutput, edit
from .tasks import EDIT_TASKS, get_task

__all__ = ["EDIT_TASKS", "EditContext", "EditOutput", "EditTask", "edit", "get_task"]
