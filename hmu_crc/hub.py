"""Publishing on the Hugging Face Hub: a prepared dataset folder or a trained model, each in one commit.

Both pushes check everything they can before the first request (the folder, its card, the repository id, that a
token exists), send only an allow-list of files, and commit them in a single commit: a failure at any point leaves
the repository as it was, and running the same push again sends only what the Hub does not have yet.
"""

from __future__ import annotations

import csv
import importlib
import io
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, DatasetCard, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import get_session

from hmu_crc.model_card import REPO_ID, render_model_card

logger = logging.getLogger(__name__)

RepoType = Literal["dataset", "model"]

CLINICAL_CONFIGS = ("clinical", "tiles_clinical")
"""Configs that carry patient-level clinical columns; published only when asked for."""
CLINICAL_PROBLEM_KINDS = frozenset({"bad_value", "bad_encoding", "bad_csv", "duplicate_patient", "no_tiles"})
"""Rows of problems.csv about the clinical CSV; they quote its cells, so they stay home with the clinical data."""
DATASET_EXTRAS = ("preparation_report.json", "problems.csv")
"""Files beside the card that go up with the shards when present."""
MODEL_FILES = (
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "preprocessor_config.json",
    "resolved_config.yaml",
    "all_results.json",
    "*_metrics.json",
    "*.png",
)
"""What a model push sends from the top of the model folder, besides the generated README.md.

Everything else stays local, on purpose:

- `checkpoint-*/`: intermediate copies of the weights with optimizer, scheduler and RNG states, several times the
  model's size and of no use for inference.
- `optimizer.pt`, `scheduler.pt`, `rng_state.pth`, `trainer_state.json`: training state, for resuming a run.
- `training_args.bin`: a pickle (loading it runs code) of every TrainingArguments field, `hub_token` included.
- `<set>_predictions.csv`: one row per tile whose file names carry patient identifiers.
- `runs/`, `evaluation/` and any other subfolder: logs and re-evaluations; the card cites the top-level metrics.
"""
TEXT_SUFFIXES = (".json", ".yaml", ".yml", ".md", ".csv", ".txt")
"""Uploaded files small enough and textual enough to be searched for the token before they leave."""
ALL_OR_NOTHING = "a commit is all or nothing, so the repository holds either all of this push or none of it"
DEFAULT_TIMEOUT = 60.0
"""Seconds to wait on any one read or write of a request before giving up."""


class HubError(ValueError):
    """A push that could not be done: the message names the repository, what happened and what to do.

    A ValueError so that `hmu-crc` reports it like its other errors: one line, exit status 2.
    """


@dataclass
class UploadPlan:
    """What one push will send, checked before any request is made."""

    repo_type: RepoType
    files: dict[str, Path | bytes] = field(default_factory=dict)
    """Path in the repository -> local file, or bytes made here (a rewritten card or list)."""
    left_out: list[str] = field(default_factory=list)
    """What was deliberately not sent, in words, for the log."""
    stale_prefix: str | None = None
    """Files under this folder of the repository that this push does not send are deleted in its commit."""
    message: str = ""


@dataclass(frozen=True)
class PushResult:
    """Where a push went and what it did."""

    repo_id: str
    url: str
    commit: str | None
    """The new commit's id, or None when the repository already held exactly these files."""
    files: list[str]
    deleted: list[str]


def check_repo_id(repo_id: str) -> None:
    """Refuse anything but `namespace/name`, before a request is made."""
    if not REPO_ID.match(repo_id or "") or ".." in repo_id or repo_id.endswith((".git", "-", ".")):
        msg = (
            f"repository id {repo_id!r}: expected ORG/NAME (letters, digits, '-', '_', '.'), e.g. "
            "my-lab/hmu-crc-hist550k; pass --repo-id in that form"
        )
        raise HubError(msg)


def resolve_token(token_env: str | None = None) -> str:
    """The token for a push: from the variable `token_env` when named, else huggingface_hub's own lookup
    ($HF_TOKEN, then the token saved by `hf auth login`). Never logged, printed or written anywhere.

    Raises:
        HubError: If there is none.
    """
    if token_env:
        token = os.environ.get(token_env)
        if not token:
            msg = f"no token in ${token_env}: expected a Hugging Face write token there; set it, or drop --token-env"
            raise HubError(msg)
        return token
    token = get_token()
    if not token:
        msg = (
            "no Hugging Face token found: expected a write token in $HF_TOKEN or saved by `hf auth login`; "
            "create one at https://huggingface.co/settings/tokens"
        )
        raise HubError(msg)
    return token


def dataset_plan(data_dir: str | Path, *, include_clinical: bool = False) -> UploadPlan:
    """Check a folder written by `hmu-crc prepare` and list what a push sends: every shard of each config in
    the card, the card, and the report files. Without `include_clinical` the clinical configs, their card entries
    and the clinical rows of problems.csv are left out; the folder itself is never changed.

    Raises:
        HubError: If the folder, its card or its shards are not as `prepare` writes them.
    """
    folder = Path(data_dir)
    card_path = folder / "README.md"
    if not folder.is_dir():
        raise HubError(f"{folder}: no such folder; expected the output of `hmu-crc prepare`; pass --data-dir")
    if not card_path.is_file():
        msg = f"{folder}: no README.md; expected the dataset card that `hmu-crc prepare` writes; run prepare again"
        raise HubError(msg)
    card = DatasetCard(card_path.read_text())
    metadata = card.data.to_dict()
    configs = metadata.get("configs") or []
    if not configs:
        msg = f"{card_path}: no `configs:` in its YAML; expected one entry per config as prepare writes; rerun it"
        raise HubError(msg)
    plan = UploadPlan("dataset", stale_prefix="data/")
    kept = []
    for config in configs:
        name = config.get("config_name", "default")
        shards = _config_shards(folder, config)
        if name in CLINICAL_CONFIGS and not include_clinical:
            plan.left_out.append(f"config {name} ({len(shards)} shard(s); pass --include-clinical to publish it)")
            continue
        kept.append(name)
        plan.files.update({shard.relative_to(folder).as_posix(): shard for shard in shards})
    if not kept:
        raise HubError(f"{card_path}: every config is clinical; nothing to publish without --include-clinical")
    dropped = [c.get("config_name") for c in configs if c.get("config_name") not in kept]
    plan.files["README.md"] = _card_without(card, metadata, dropped) if dropped else card_path
    for name in DATASET_EXTRAS:
        if (folder / name).is_file():
            plan.files[name] = folder / name
        else:
            logger.warning("%s has no %s; the dataset is published without it", folder, name)
    if dropped and (folder / "problems.csv").is_file():
        plan.files["problems.csv"] = _problems_without_clinical(folder / "problems.csv")
    plan.message = f"Upload HMU-CRC-Hist550K: {', '.join(kept)}" + (" (no clinical data)" if dropped else "")
    return plan


def _config_shards(folder: Path, config: dict[str, Any]) -> list[Path]:
    """The Parquet files that a config's `data_files` patterns match, each pattern matching at least one."""
    name = config.get("config_name", "default")
    entries = config.get("data_files") or []
    entries = [entries] if isinstance(entries, (str, dict)) else entries
    patterns = [p for e in entries for p in ([e] if isinstance(e, str) else _as_list(e.get("path")))]
    if not patterns:
        raise HubError(f"{folder}/README.md: config {name} has no data_files; expected split paths; rerun prepare")
    shards: list[Path] = []
    for pattern in patterns:
        if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            raise HubError(f"{folder}/README.md: config {name} names {pattern}, outside the folder; rerun prepare")
        found = sorted(p for p in folder.glob(pattern) if p.is_file())
        if not found:
            msg = (
                f"{folder}: config {name} names {pattern} but no file matches; expected its Parquet shards; "
                "run `hmu-crc prepare` again, or copy the whole folder"
            )
            raise HubError(msg)
        empty = [p for p in found if p.suffix != ".parquet" or p.stat().st_size == 0]
        if empty:
            raise HubError(f"{empty[0]}: expected a non-empty Parquet shard; run `hmu-crc prepare` again")
        shards += found
    return shards


def _as_list(value: str | list[str] | None) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _card_without(card: DatasetCard, metadata: dict[str, Any], dropped: list[str]) -> bytes:
    """The dataset card with `dropped` configs taken out of `configs:` and `dataset_info:`, and a note saying so."""
    trimmed = dict(metadata)
    for key in ("configs", "dataset_info"):
        entries = trimmed.get(key)
        if isinstance(entries, list):
            trimmed[key] = [e for e in entries if e.get("config_name") not in dropped]
    names = ", ".join(f"`{name}`" for name in dropped)
    note = (
        f"> The {names} config(s) (patient-level clinical data) of this dataset are not published in this "
        "repository; the configs listed in this card's metadata are."
    )
    text = yaml.safe_dump(trimmed, sort_keys=False, allow_unicode=True)
    return f"---\n{text}---\n\n{note}\n{card.text}".encode()


def _problems_without_clinical(path: Path) -> bytes:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [row for row in reader if row.get("kind") not in CLINICAL_PROBLEM_KINDS]
        fields = reader.fieldnames or []
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def model_plan(model_dir: str | Path, repo_id: str, *, dataset_id: str | None = None) -> UploadPlan:
    """Check a folder written by train_hf.py and list what a push sends (`MODEL_FILES` and a generated card).

    Raises:
        HubError: If the folder has no safetensors weights or image processor, or the model does not load with
            the eight tissue classes in their order.
    """
    from transformers import AutoModelForImageClassification

    from hmu_crc.evaluation import check_labels

    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        msg = f"{folder}: no config.json; expected a model folder written by train_hf.py; pass its output_dir"
        raise HubError(msg)
    plan = UploadPlan("model")
    for pattern in MODEL_FILES:
        plan.files.update({p.name: p for p in sorted(folder.glob(pattern)) if p.is_file()})
    if not any(name.endswith(".safetensors") for name in plan.files):
        msg = (
            f"{folder}: no model.safetensors; expected safetensors weights (pickled .bin weights are not "
            "published); save the model with save_pretrained() first"
        )
        raise HubError(msg)
    if "preprocessor_config.json" not in plan.files:
        msg = f"{folder}: no preprocessor_config.json; expected the image processor saved beside the model"
        raise HubError(msg)
    try:
        check_labels(AutoModelForImageClassification.from_pretrained(folder))
    except (OSError, ValueError) as error:
        raise HubError(f"{folder}: cannot be published: {error}") from error
    plan.files["README.md"] = render_model_card(folder, repo_id, dataset_id=dataset_id).encode()
    plan.left_out = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if p.name not in plan.files)
    plan.message = f"Upload tissue classifier {repo_id.split('/')[-1]}"
    return plan


def push_dataset(
    data_dir: str | Path,
    repo_id: str,
    *,
    private: bool = True,
    include_clinical: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> PushResult:
    """Publish a prepared folder as a dataset repository in one commit.

    Args:
        data_dir: The folder `hmu-crc prepare` wrote.
        repo_id: `ORG/NAME` of the dataset repository; created if missing.
        private: Create the repository private (an existing repository keeps its visibility).
        include_clinical: Also publish the `clinical` and `tiles_clinical` configs (patient-level data). Refused
            for an existing public repository unless `private` is False too.
        token: The write token (default: `resolve_token()`).
        endpoint: The Hub's address (default: huggingface_hub's, i.e. $HF_ENDPOINT or https://huggingface.co).
        timeout: Seconds to wait on any one read or write before giving up.

    Returns:
        The repository, the commit (None when nothing had changed), and the files sent and deleted.

    Raises:
        HubError: If the folder is not publishable, or the Hub refused or failed the push.
    """
    check_repo_id(repo_id)
    plan = dataset_plan(data_dir, include_clinical=include_clinical)
    for note in plan.left_out:
        logger.info("left out: %s", note)
    return _push(plan, repo_id, private, token, endpoint, timeout, clinical=include_clinical)


def push_model(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = True,
    dataset_id: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> PushResult:
    """Publish a trained tissue classifier with its card, metrics and pictures in one commit.

    What is sent and what never is: see `MODEL_FILES`. The card is generated from the folder (see
    `hmu_crc.model_card.render_model_card`); the folder itself is not changed.

    Args:
        model_dir: The output_dir of train_hf.py.
        repo_id: `ORG/NAME` of the model repository; created if missing.
        private: Create the repository private (an existing repository keeps its visibility).
        dataset_id: The dataset the card names (default: the run's, see `render_model_card`).
        token: The write token (default: `resolve_token()`).
        endpoint: The Hub's address (default: huggingface_hub's).
        timeout: Seconds to wait on any one read or write before giving up.

    Returns:
        The repository, the commit (None when nothing had changed), and the files sent.

    Raises:
        HubError: If the folder is not a publishable tissue classifier, or the Hub refused or failed the push.
    """
    check_repo_id(repo_id)
    plan = model_plan(model_dir, repo_id, dataset_id=dataset_id)
    logger.info("left out (training state, per-tile predictions, logs): %s", ", ".join(plan.left_out) or "nothing")
    return _push(plan, repo_id, private, token, endpoint, timeout)


def claim_trainer_push(training_args: Any) -> str | None:
    """For train_hf.py: take `--push_to_hub` over from Trainer and return the repository to push to at the end.

    Trainer's own push would upload the whole output folder (checkpoints, `training_args.bin`, per-tile
    predictions) after each save; `push_model` sends the allow-listed files and a card once, when the metrics
    exist. So `push_to_hub` is turned off on the arguments (the resolved config then records `push_to_hub:
    false` beside `hub_model_id`), and the repository id and a token are checked now, before hours of training.

    Returns:
        `hub_model_id`, or None when `--push_to_hub` was not given.

    Raises:
        HubError: If `--hub_model_id` is missing or malformed, or no token is available.
    """
    if not training_args.push_to_hub:
        return None
    repo_id = training_args.hub_model_id
    if not repo_id:
        raise HubError("--push_to_hub needs --hub_model_id ORG/NAME: the repository to publish the model in")
    check_repo_id(repo_id)
    if not training_args.hub_token:
        resolve_token()
    training_args.push_to_hub = False
    return repo_id


def _push(
    plan: UploadPlan,
    repo_id: str,
    private: bool,
    token: str | None,
    endpoint: str | None,
    timeout: float,
    *,
    clinical: bool = False,
) -> PushResult:
    token = token or resolve_token()
    _refuse_token_in_files(plan, token)
    api = HfApi(endpoint=endpoint, token=token, library_name="hmu-crc")
    kind = plan.repo_type
    where = f"{kind} repository {repo_id} at {api.endpoint}"
    step = "checking the token"
    try:
        with request_timeout(timeout):
            api.whoami()
            step = "creating the repository"
            url = api.create_repo(repo_id, repo_type=kind, private=private, exist_ok=True)
            info = api.repo_info(repo_id, repo_type=kind)
            _check_visibility(info.private, private, clinical, where)
            step = "listing the repository"
            remote = set(api.list_repo_files(repo_id, repo_type=kind))
            stale = sorted(
                p for p in remote if plan.stale_prefix and p.startswith(plan.stale_prefix) and p not in plan.files
            )
            additions = [CommitOperationAdd(path, source) for path, source in plan.files.items()]
            step = "uploading files (nothing is committed yet)"
            api.preupload_lfs_files(repo_id, additions, repo_type=kind)
            step = "committing"
            operations = [*additions, *(CommitOperationDelete(path) for path in stale)]
            commit = api.create_commit(repo_id, operations, commit_message=plan.message, repo_type=kind)
    except HubError:
        raise
    except Exception as error:
        raise HubError(_failure(error, where, step, timeout)) from error
    changed = commit.oid != info.sha
    if changed:
        logger.info("pushed %d file(s) to %s in commit %s", len(plan.files), url, commit.oid)
        if stale:
            logger.info("deleted %d file(s) that this push does not send: %s", len(stale), ", ".join(stale))
    else:
        logger.info("%s already holds these files; no commit made", url)
    return PushResult(repo_id, str(url), commit.oid if changed else None, sorted(plan.files), stale if changed else [])


def _check_visibility(is_private: bool | None, want_private: bool, clinical: bool, where: str) -> None:
    if is_private is False and clinical and want_private:
        msg = (
            f"{where} is public, and --include-clinical would publish patient-level data in it; nothing was sent; "
            "push to a private repository, or pass --public if that is really intended"
        )
        raise HubError(msg)
    if is_private is False and want_private:
        logger.warning("%s already exists and is public: this push is public too (visibility is not changed)", where)
    elif is_private and not want_private:
        logger.warning("%s already exists and is private; change its visibility in its settings if wanted", where)
    elif clinical and not is_private:
        logger.warning("%s is public and now holds the clinical configs (patient-level data)", where)


def _refuse_token_in_files(plan: UploadPlan, token: str) -> None:
    """Last check before anything leaves: the token must not be inside a text file about to be published."""
    for path, source in plan.files.items():
        if not path.endswith(TEXT_SUFFIXES):
            continue
        data = source if isinstance(source, bytes) else source.read_bytes()
        if token.encode() in data:
            msg = f"{path} contains the Hub token; nothing was sent; remove the token from it and push again"
            raise HubError(msg)


@contextmanager
def request_timeout(seconds: float) -> Iterator[None]:
    """Give each request of huggingface_hub's shared HTTP client a time limit, for the length of a push.

    NOTE: huggingface_hub's client waits forever by default (timeout None) and `HfApi` takes no timeout, so the
    shared client's own setting is changed and put back afterwards.
    """
    client = get_session()
    previous = client.timeout
    client.timeout = seconds
    try:
        yield
    finally:
        client.timeout = previous


def _transport_errors() -> tuple[type[Exception], type[Exception]]:
    """(timeout, any network failure) of the HTTP library under huggingface_hub: httpx, or httpx2 from hub 2."""
    module = importlib.import_module(type(get_session()).__module__.split(".")[0])
    return module.TimeoutException, module.TransportError


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _failure(error: Exception, where: str, step: str, timeout: float) -> str:
    """What went wrong, in words, for each way a push fails; never quotes request headers (the token)."""
    timed_out, transport = _transport_errors()
    again = "run the same push again: files the Hub already has are not sent twice, and no commit is repeated"
    for cause in _causes(error):
        if isinstance(cause, HfHubHTTPError) and cause.response is not None:
            status = cause.response.status_code
            if status == 401:
                return (
                    f"the Hub refused the token (HTTP 401) while {step} for {where}; nothing was committed; "
                    "expected a valid write token: create one at https://huggingface.co/settings/tokens, put it in "
                    "$HF_TOKEN (or run `hf auth login`), then push again"
                )
            if status == 403:
                return (
                    f"the token may not write to {where} (HTTP 403) while {step}; nothing was committed; use a "
                    "token with write access to that namespace, or push to a namespace you own"
                )
            if status >= 500:
                return f"the Hub failed (HTTP {status}) while {step} for {where}; {ALL_OR_NOTHING}; {again}"
            return f"the Hub answered HTTP {status} while {step} for {where}: {_server_message(cause)}"
        if isinstance(cause, timed_out):
            return (
                f"no answer within {timeout:g} s while {step} for {where}; {ALL_OR_NOTHING}; {again} (pass a "
                "larger --timeout on a slow link)"
            )
        if isinstance(cause, transport):
            return (
                f"could not reach the Hub ({type(cause).__name__}) while {step} for {where}; nothing was "
                f"committed; check the connection and $HF_ENDPOINT, then {again}"
            )
    return f"{type(error).__name__} while {step} for {where}: {error}"


def _server_message(error: HfHubHTTPError) -> str:
    return str(getattr(error, "server_message", None) or error).splitlines()[0]
