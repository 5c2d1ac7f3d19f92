"""The per-server steps, for `apply` and `fleet` alike: pull → create → verify.

Both bring one server to its declared models the same way: the pull options come from
`[pull]` and the server's timeouts, custom models are created once their base is there,
and each model is verified (loaded as an embedding model when that is all it does, timed,
held to `[verify] min_tokens_per_second`). What differs is only what each reports: apply
a step at a time for one machine, fleet a live row per host; and where the models come
from: the registry (the server pulls) unless a `ModelSource` is given (a bundle, the
seed cache: this machine uploads).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from provision.models.create import CreateOutcome, CreateStatus, CustomModel, ensure_custom_model
from provision.models.pull import PullOptions, PullOutcome, Reporter
from provision.models.source import ModelSource, ServerPull
from provision.models.spec import ModelSpec, PullSpec, VerifySpec
from provision.models.verify import Verification, verify_model
from provision.names import ModelName, parse_name
from provision.server import OllamaServer, ServerError

ModelKey = tuple[str, str, str, str]


@dataclass(frozen=True)
class Target:
    """One declared model on one server."""

    spec: ModelSpec
    name: ModelName  # the model to use (a custom model: the one to create)
    pull_name: ModelName  # what is downloaded (a custom model: its base)

    @classmethod
    def of(cls, spec: ModelSpec, name: ModelName | None = None) -> Target:
        """`name`: what a `choose` list was decided to mean."""
        chosen = name or parse_name(spec.name or "")
        return cls(spec, chosen, spec.pull_name if spec.name else chosen)


@dataclass(frozen=True)
class Checked:
    """A model verified on the server, held to `[verify]`."""

    verification: Verification
    problem: str | None  # why it fails (None: it passes)


def pull_names(targets: Iterable[Target]) -> list[ModelName]:
    """What is downloaded, each once: the models, custom models' bases instead of them."""
    names: dict[ModelKey, ModelName] = {}
    for target in targets:
        names.setdefault(target.pull_name.key, target.pull_name)
    return list(names.values())


class ServerSteps:
    def __init__(self, server: OllamaServer, pull: PullSpec, verify: VerifySpec, *,
                 backoff_base: float, connect_timeout: float,
                 source: ModelSource | None = None) -> None:
        self.server = server
        self.pull_spec = pull
        self.verify_spec = verify
        self.backoff_base = backoff_base
        self.connect_timeout = connect_timeout
        self.source = source or ServerPull(self.pull_options())

    # --- pull ---------------------------------------------------------------------------

    def pull_options(self, *, force: bool = False, check_disk: bool = True) -> PullOptions:
        spec = self.pull_spec
        return PullOptions(force=force, insecure=spec.insecure, parallel=spec.parallel,
                           stall_timeout=spec.stall_timeout, retries=spec.retries,
                           backoff_base=self.backoff_base, check_disk=check_disk,
                           connect_timeout=self.connect_timeout)

    def pull(self, names: list[ModelName], reporter: Reporter | None = None, *,
             force: bool = False, check_disk: bool = True) -> dict[ModelKey, PullOutcome]:
        """Get what the server lacks from the source (`force`: present models again, or
        with a store, those with other weights); the outcomes by model. Raises as
        `pull_models` does (the server cannot be listed, a disk too small,
        PullInterrupted on Ctrl-C)."""
        outcomes = self.source.provide(self.server, names, upgrade=force,
                                       check_disk=check_disk, reporter=reporter)
        return {o.name.key: o for o in outcomes}

    # --- create -------------------------------------------------------------------------

    def create(self, targets: Iterable[Target], pulled: Mapping[ModelKey, PullOutcome],
               present: Collection[ModelKey]) -> dict[ModelKey, CreateOutcome]:
        """Create the custom models (unless the server has them as declared). One whose
        base failed to pull fails; one whose base is neither pulled nor `present` is left
        out (its base's absence is what is reported)."""
        created = {}
        for target in targets:
            if not target.spec.is_custom:
                continue
            base = pulled.get(target.pull_name.key)
            if base is not None and not base.ok:
                created[target.name.key] = CreateOutcome(
                    name=target.name.short, status=CreateStatus.FAILED,
                    error=f"its base {target.pull_name.short} failed to pull")
            elif base is not None or target.pull_name.key in present:
                spec = target.spec
                created[target.name.key] = ensure_custom_model(self.server, CustomModel(
                    name=target.name, base=target.pull_name, system=spec.system,
                    template=spec.template, parameters=tuple(spec.parameters.items())))
        return created

    # --- verify -------------------------------------------------------------------------

    def is_embedding(self, name: ModelName) -> bool:
        """Does the model only embed (as its `/api/show` capabilities say)? Unknown
        capabilities count as a chat model."""
        try:
            show = self.server.show(name)
        except ServerError:
            return False
        return show is not None and show.is_embedding

    def verify(self, target: Target) -> Checked:
        """Load the model, see where it runs, time a short generation; held to
        `[verify] min_tokens_per_second`."""
        spec = self.verify_spec
        result = verify_model(
            self.server, target.name, num_ctx=target.spec.num_ctx,
            keep_alive=target.spec.keep_alive, generate=spec.generate, prompt=spec.prompt,
            num_predict=spec.num_predict, embedding=self.is_embedding(target.name))
        problem = result.error
        rate = result.tokens_per_second
        if result.ok and spec.min_tokens_per_second and rate is not None \
                and rate < spec.min_tokens_per_second:
            problem = f"{rate:.1f} tokens/s, below the required {spec.min_tokens_per_second:g}"
        return Checked(result, problem)
