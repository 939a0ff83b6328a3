"""Admission: the one door every new job and every paid hop passes, whatever started it.

A chat command, the CLI, the console, the web gallery, a button or a reaction (re-roll, remix,
extend, animate), a story (plan, confirm, redo a scene, add a scene, re-roll), a pending
confirmation, a retry and a fallback hop all end in `admit` (or `admit_hop`), which checks, in
this order and always all of them:

- where: the channel is one the tenant's admins allow;
- who: the roles the tenant requires (Discord), the reuse rule for someone else's job;
- what: the pipeline and the model are allowed here, the prompt's length, seconds and size
  within the limits (the operator's are ceilings), a story's scenes and total length;
- price: a known price (an unpriced model would count as free against every budget);
- the confirm threshold, the cooldown between paid jobs;
- the queue limit and the spend reservation, in the same store transaction as the insert.

Doors may call the cheap checks earlier to answer before slow work (a story's planner call),
but `admit` runs every check again on the job as it will be stored, so no door can skip one.
Moderation runs in the runner before each paid step (a hop that became paid is moderated again).
"""
from __future__ import annotations

import asyncio
import io
import secrets
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from bot.config import CoreSettings
from bot.core.budget import BudgetGuard, estimate_job_cost
from bot.core.errors import BudgetExceeded, LimitReached, NeedsConfirmation, NotAllowed
from bot.core.models import GenerateRequest, Job, JobKind, JobStatus, Origin, Tenant, clean_text
from bot.core.render import job_title
from bot.core.requests import video_request_for
from bot.core.take_set import take_kind, takes_count
from bot.core.tenant_settings import Effective, TenantSettings
from bot.core.turns import TurnGate
from providers.base import ImageRequest, VideoRequest, parse_size
from providers.errors import InvalidRequest, Unavailable
from providers.input_images import open_image
from providers.pipeline import Pipeline
from providers.registry import PipelineRegistry
from storage.contract import Store
from storage.media import MediaStore
from storage.spend import OverBudget, QueueFull, QueueLimit, SpendLimit

#: How long a request above the confirm threshold waits for its owner.
CONFIRM_SECONDS = 600

#: A rule for one kind of job, beyond the common ones (a story's scene count and length).
KindRule = Callable[[Job], None]


class Admission:
    def __init__(
        self,
        store: Store,
        media: MediaStore,
        registry: PipelineRegistry,
        settings: CoreSettings,
        tenant_settings: TenantSettings,
        budget: BudgetGuard,
        *,
        default_pipeline: Callable[[bool], str],
    ) -> None:
        self.store = store
        self.media = media
        self.registry = registry
        self.settings = settings
        self.tenant_settings = tenant_settings
        self.budget = budget
        self._default_pipeline = default_pipeline
        self._admins = {a.strip() for a in settings.admin_user_ids.split(",") if a.strip()}
        self._splits = settings.split_map
        #: When each user last started a paid job, for the cooldown (per process).
        self._last_paid: dict[tuple[str, str], float] = {}
        #: Planner calls per user in the last hour (the story planner is a paid model).
        self._planner_calls: dict[tuple[str, str], deque[float]] = {}
        self.kind_rules: dict[JobKind, KindRule] = {}
        #: At most 32 submissions run their checks per turn of the event loop (bot.core.turns).
        self.turns = TurnGate()

    # --- reads ------------------------------------------------------------------------------

    async def rules(self, origin: Origin) -> Effective:
        """What applies to this caller: the tenant's, channel's and user's settings within the operator's ceilings."""
        return await self.tenant_settings.effective(origin)

    def is_admin(self, user_id: str) -> bool:
        return user_id in self._admins

    # --- the cheap checks (each door may call them early; `admit` calls them all again) ------

    def prompt(self, prompt: str | None) -> str:
        text = " ".join(clean_text(prompt or "").split())  # every door: remix, extend, scenes too
        if not text:
            raise InvalidRequest("The prompt is empty. Describe the video, for example: /video a teal coupe crossing a desert at noon")
        limit = self.settings.max_prompt_chars
        if len(text) > limit:
            raise InvalidRequest(f"The prompt is {len(text)} characters; the limit is {limit}. Shorten it.")
        return text

    def check_where(self, origin: Origin, here: Effective) -> None:
        """The channels and (Discord) roles a tenant's admins chose."""
        channels = here.get("channels") or []
        # A job posted nowhere (shown on the web alone) has no channel to check.
        if channels and not origin.direct and origin.channel_id is not None and origin.channel_id not in channels:
            raise NotAllowed("The bot makes videos only in the channels this server's admins chose. Try one of those.")
        roles = here.get("roles") or []
        if roles and origin.platform == "discord" and not origin.direct and not set(roles) & set(origin.extra.get("roles", [])):
            raise NotAllowed("Making videos here needs one of the roles the admins chose.")

    def check_allowed(self, pipeline: str, model: str | None, here: Effective) -> None:
        allowed = here.get("pipelines") or []
        if allowed and pipeline not in allowed:
            raise NotAllowed(f"The '{pipeline}' pipeline is not allowed here. Allowed: {', '.join(allowed)}.")
        models = here.get("models") or []
        if model and models and model not in models:
            raise NotAllowed(f"The model '{model}' is not allowed here. Allowed: {', '.join(models)}.")

    def check_limits(self, seconds: int, size: str, here: Effective) -> None:
        longest = here.get("max_seconds")
        if longest and seconds > longest:
            raise InvalidRequest(f"Clips here are at most {longest} seconds; ask for --seconds {longest} or less.")
        largest = here.get("max_size")
        if largest:
            w, h = parse_size(size)
            mw, mh = parse_size(largest)
            if w * h > mw * mh:
                raise InvalidRequest(f"The largest size here is {largest}; ask for --size {largest} or smaller.")

    async def check_reuse(self, parent: Job, origin: Origin, verb: str, *, admin: bool = False) -> None:
        """Re-roll, remix, extend or animate of someone else's job: the new job is the asker's own
        (they pay); where it is allowed is the tenant's `reuse` setting (default: its channel)."""
        if Tenant.of(origin) is None or origin.user_id == parent.origin.user_id or admin or self.is_admin(origin.user_id):
            return
        if parent.origin.private and origin.channel_id != parent.origin.channel_id:
            raise NotAllowed(f"Job {parent.id} was made in a private place; only its owner can {verb} it elsewhere.")
        rule = (await self.rules(origin)).get("reuse", "channel")
        if rule == "owner":
            raise NotAllowed(f"Here only the person who asked for job {parent.id} can {verb} it.")
        if rule == "channel" and origin.channel_id != parent.origin.channel_id:
            raise NotAllowed(f"You can {verb} someone else's job only in the channel where it was made.")

    def check_planner_call(self, origin: Origin) -> None:
        """The story planner is a paid model: a few premises per user per hour."""
        limit = self.settings.planner_calls_per_hour
        key = (origin.platform, origin.user_id)
        now = time.monotonic()
        calls = self._planner_calls.setdefault(key, deque())
        while calls and now - calls[0] > 3600:
            calls.popleft()
        if len(calls) >= limit:
            wait = 3600 - (now - calls[0])
            raise LimitReached(
                f"You planned {limit} stories in the last hour; try again in {wait / 60:.0f} min, or give the scenes yourself (one per line)."
            )
        calls.append(now)

    async def check_before_planning(self, origin: Origin, here: Effective) -> None:
        """Before a paid planner call: the refusals the story would meet anyway, from cheap reads
        (the cooldown, a full queue, a budget already spent), so a premise costs nothing then."""
        self._cooldown(origin, here)
        waiting = await self.store.count(statuses=[s for s in JobStatus if not s.terminal], platform=origin.platform, user_id=origin.user_id)
        limit = self.settings.max_queued_per_user
        if waiting >= limit:
            raise _queue_full(waiting, limit)
        budget = here.get("user_budget_usd")
        if budget is not None and await self.budget.ledger.spent(platform=origin.platform, user_id=origin.user_id) >= budget:
            raise BudgetExceeded(f"You have spent your ${budget:.2f} daily budget; it resets at midnight UTC.")

    def check_cooldown(self, job: Job, here: Effective) -> None:
        if (job.cost_estimate or 0.0) > 0:
            self._cooldown(job.origin, here)

    def _cooldown(self, origin: Origin, here: Effective) -> None:
        """The seconds a paid command waits after the same user's previous one (never the CLI's)."""
        wait = float(here.get("cooldown_seconds") or 0)
        last = self._last_paid.get((origin.platform, origin.user_id))
        if wait > 0 and origin.platform != "cli" and last is not None and (left := wait - (time.monotonic() - last)) > 0:
            raise LimitReached(f"Paid videos here are at least {wait:g} s apart; try again in {left:.0f} s.")

    # --- pipelines and prices -----------------------------------------------------------------

    def pick_pipeline(self, name: str) -> tuple[str, dict[str, str] | None]:
        """A pipeline name as is, or for an A/B split name the arm this job falls in (recorded on the job)."""
        split = self._splits.get(name)
        if split is None or name in self.registry:
            return name, None
        arm = split.choose(secrets.token_hex(8))
        if arm not in self.registry:
            raise InvalidRequest(f"The split '{name}' names an unknown pipeline '{arm}'. Tell an admin.")
        return arm, {"split": name, "arm": arm}

    def chosen_pipeline(self, asked: str | None, here: Effective, *, image: bool = False) -> tuple[Pipeline, dict[str, str] | None]:
        """The pipeline a request names, else the tenant's default, else the deployment's."""
        default = here.get("default_pipeline") if not image and here.source("default_pipeline") != "env" else None
        name, split = self.pick_pipeline(asked or default or self._default_pipeline(image))
        return self.registry.get(name), split

    def taker(self, pipeline: Pipeline, request: VideoRequest) -> Pipeline:
        """The pipeline that will take the job: this one, or when it is unavailable (no key,
        retired model) the first of its fallbacks that accepts the request; the runner moves it there."""
        try:
            pipeline.validate(request)
            return pipeline
        except Unavailable:
            for name in pipeline.fallbacks:
                if name not in self.registry:
                    continue
                candidate = self.registry.get(name)
                try:
                    candidate.validate(request)
                except Unavailable:
                    continue
                return candidate
            raise

    def price(self, estimate: float | None, job: Job) -> float | None:
        """The provider's estimate, else VIDEOBOT_PRICES for the model."""
        if estimate is not None:
            return estimate
        model = job.params.model or self._default_model(job)
        price = self.settings.price_map.get(model or "")
        if price is None:
            return None
        return round(price * (1 if job.kind is JobKind.IMAGE else job.params.seconds), 4)

    def require_price(self, job: Job) -> None:
        """A model without a price would count as free against every budget: refuse it."""
        if job.cost_estimate is not None:
            return
        model = job.params.model or self._default_model(job)
        if model in self.settings.free_set or job.pipeline in self.settings.free_set:
            job.cost_estimate = 0.0
            return
        raise InvalidRequest(
            f"The price of {model or job.pipeline} is not known, so it cannot be counted against budgets. "
            f"An admin can set VIDEOBOT_PRICES={model or job.pipeline}=USD (per second, or per image), "
            "or list it in VIDEOBOT_FREE_MODELS."
        )

    def estimate(self, job: Job, pipeline: Pipeline) -> float | None:
        """What the job costs on `pipeline` (or the fallback that will take it): its image or video step.
        A set of takes costs all of its takes at once."""
        if job.kind is JobKind.TAKES:
            one = job.model_copy(update={"kind": take_kind(job)})
            each = self.estimate(one, pipeline)
            return None if each is None else round(each * takes_count(job), 4)
        if job.kind is JobKind.IMAGE:
            if pipeline.image is None:
                raise InvalidRequest(f"'{pipeline.name}' makes videos; use /video, or an image pipeline for /image.")
            request = ImageRequest(prompt=job.prompt, size=job.params.size, model=job.params.model, seed=job.params.seed)
            pipeline.validate_image(request)
            return self.price(pipeline.image.estimate_cost(request), job)
        if pipeline.video is None:
            raise InvalidRequest(f"'{pipeline.name}' makes images; use /image, or a video pipeline for /video.")
        request = video_request_for(job)
        taker = self.taker(pipeline, request)
        return self.price(estimate_job_cost(taker, request, job), job)

    async def load_image(self, request: GenerateRequest) -> bytes | None:
        """The input image as PNG bytes, refused if unreadable, not an image or too large."""
        if request.image_path is None and request.image_bytes is None:
            return None
        limit = int(self.settings.max_image_mb * 1_000_000)
        if request.image_bytes is not None:
            data, name = request.image_bytes, request.image_name or "attachment"
        else:
            path = request.image_path
            assert path is not None
            name = path.name
            try:
                size = path.stat().st_size
            except OSError:
                raise InvalidRequest(f"Cannot read the image '{path}'; check the path.") from None
            if not path.is_file():
                raise InvalidRequest(f"'{path}' is not an image file; give the path of a PNG, JPEG or WebP.")
            if size > limit:
                raise InvalidRequest(f"The image is {size / 1e6:.1f} MB; the limit is {limit / 1e6:g} MB. Send a smaller one.")
            try:
                data = await asyncio.to_thread(path.read_bytes)
            except OSError:
                raise InvalidRequest(f"Cannot read the image '{path}'; check the path and its permissions.") from None
        if len(data) > limit:
            raise InvalidRequest(f"The image is {len(data) / 1e6:.1f} MB; the limit is {limit / 1e6:g} MB. Send a smaller one.")

        def to_png() -> bytes:
            out = io.BytesIO()
            open_image(data, name=name, limit=self.settings.max_image_pixels).save(out, "PNG")
            return out.getvalue()

        return await asyncio.to_thread(to_png)

    # --- the door -----------------------------------------------------------------------------

    async def admit(
        self,
        job: Job,
        *,
        image: bytes | None = None,
        here: Effective | None = None,
        confirmed: bool = False,
        lease: dict[str, object] | None = None,
    ) -> Job:
        """Every rule, on the job as it will be stored; then the reservation and the insert in one
        store transaction. Raises the rule's own error; nothing is stored or reserved on a refusal."""
        origin = job.origin
        if here is None:  # a caller that brings `here` read the rules and took its turn (JobService.submit)
            here = await self.rules(origin)
            await self.turns.wait()
        pipeline = self.registry.get(job.pipeline)
        self.check_where(origin, here)
        self.check_allowed(pipeline.name, job.params.model, here)
        self.prompt(job.prompt)
        parse_size(job.params.size)
        if job.kind is not JobKind.IMAGE and not (job.kind is JobKind.TAKES and take_kind(job) is JobKind.IMAGE):
            # an image's size is the image model's, not a clip's
            self.check_limits(job.params.seconds, job.params.size, here)
        rule = self.kind_rules.get(job.kind)
        if rule is not None:
            rule(job)
        if job.kind is not JobKind.STORY:
            # Priced now, even when a price was shown before (a confirmation: prices may have moved).
            job.cost_estimate = self.estimate(job, pipeline)
        self.require_price(job)
        job.state.setdefault("moderation_mode", here.get("moderation"))
        if here.get("blocklist"):
            job.state.setdefault("blocklist", here.get("blocklist"))
        if not confirmed and self._needs_confirmation(job, here):
            token = secrets.token_hex(4)
            if image is not None and job.params.image_path:
                await asyncio.to_thread(self.media.write_bytes, Path(job.params.image_path), image)
            await self.store.put_pending(token, job, expires_at=time.time() + CONFIRM_SECONDS)
            raise NeedsConfirmation(token, job.cost_estimate or 0.0, job_title(job), CONFIRM_SECONDS)
        self.check_cooldown(job, here)
        limits = self.budget.limits_for(
            origin, user_budget=here.get("user_budget_usd"), workspace_budget=here.get("tenant_budget_usd"), overridden=True
        )
        if image is not None and job.params.image_path:
            await asyncio.to_thread(self.media.write_bytes, Path(job.params.image_path), image)
        try:
            job = await self.store.create(job, spend_limits=limits, queue_limit=self._queue_limit(origin), **(lease or {}))  # type: ignore[arg-type]
        except OverBudget as over:
            raise self.budget.refusal(over) from None
        except QueueFull as full:
            raise _queue_full(full.pending, full.limit.limit) from None
        if (job.cost_estimate or 0.0) > 0:
            self._last_paid[(origin.platform, origin.user_id)] = time.monotonic()
        return job

    async def admit_hop(self, job: Job, fallback: str) -> float | None:
        """A fallback hop to another pipeline: allowed here and priced like a direct request.
        Returns the new estimate (the runner reserves it against the budgets in its write)."""
        here = await self.rules(job.origin)
        pipeline = self.registry.get(fallback)
        self.check_allowed(pipeline.name, job.params.model, here)
        request = video_request_for(job)
        estimate = estimate_job_cost(pipeline, request, job)
        moved = job.model_copy(update={"pipeline": fallback})
        estimate = self.price(estimate, moved)
        if estimate is None:
            model = job.params.model or (pipeline.video.default_model if pipeline.video else None)
            if not (model in self.settings.free_set or fallback in self.settings.free_set):
                raise InvalidRequest(
                    f"{job.pipeline} is unavailable, and the price of its fallback {fallback} is not known, so it was not tried. "
                    f"An admin can set VIDEOBOT_PRICES={model or fallback}=USD."
                )
            estimate = 0.0
        if job.state.get("image_step_cost") and not pipeline.uses_image_step(request):
            estimate = round(estimate + job.state["image_step_cost"], 4)
        return estimate

    async def hop_limits(self, job: Job) -> list[SpendLimit]:
        """The daily limits a fallback hop's new price is reserved against (the tenant's, within the operator's)."""
        here = await self.rules(job.origin)
        return self.budget.limits_for(
            job.origin, user_budget=here.get("user_budget_usd"), workspace_budget=here.get("tenant_budget_usd"), overridden=True
        )

    # --- internals --------------------------------------------------------------------------

    def _needs_confirmation(self, job: Job, here: Effective) -> bool:
        threshold = here.get("confirm_above_usd")
        return threshold is not None and job.origin.platform != "cli" and (job.cost_estimate or 0.0) > threshold

    def _queue_limit(self, origin: Origin) -> QueueLimit:
        return QueueLimit(origin.platform, origin.user_id, self.settings.max_queued_per_user)

    def _default_model(self, job: Job) -> str | None:
        pipeline = self.registry.get(job.pipeline)
        provider = pipeline.image if job.kind is JobKind.IMAGE else pipeline.video
        return provider.default_model if provider is not None else None


def _queue_full(pending: int, limit: int) -> LimitReached:
    return LimitReached(f"You have {pending} jobs waiting or running (the limit is {limit}). Wait for some to finish, or /cancel one.")
