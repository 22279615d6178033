"""Verify webhook deliveries for a KnowledgeBase and name the sources they affect.

:class:`WebhookReceiver` is pure logic with no HTTP server: whatever serves the webhook URL
passes it the request headers and the raw body, and gets back a :class:`WebhookEvent` naming
the sources to sync incrementally, or a :class:`WebhookRejected` carrying the HTTP status to
answer and a reason (already logged at WARNING on ``aof_index.knowledge.webhooks``).

Each delivery is

1. attributed to a provider by its headers: ``X-GitHub-Event`` (GitHub), ``X-Gitlab-Event``
   (GitLab), else ``X-Hub-Signature`` (Confluence Data Center);
2. refused (404) when the provider is not listed in ``spec.sync.webhook.providers`` or
   webhooks are switched off (``enabled: false``);
3. verified (401) against the shared secret ``spec.indexing.schedule.webhook.secret``:
   GitHub's HMAC-SHA256 ``X-Hub-Signature-256``, GitLab's ``X-Gitlab-Token``, Confluence's
   HMAC-SHA256 ``X-Hub-Signature``, all compared in constant time;
4. parsed (400 for a body that is not a JSON object) and given a delivery id;
5. recorded in a SQLite file; an id already recorded within ``replay_window`` is refused
   (409). Ids are only recorded after verification, so forged requests cannot burn ids;
6. routed to the enabled sources it affects (possibly none: a GitHub ``ping``, a push to
   another branch).

Example:
    >>> receiver = WebhookReceiver(kb, Path("/var/lib/aof/webhooks.db"))  # doctest: +SKIP
    >>> receiver.path  # doctest: +SKIP
    '/webhooks/default/sre-runbooks'
    >>> event = receiver.receive(request.headers, request.body)  # doctest: +SKIP
    >>> kb_sync.sync(mode="incremental", sources=event.sources)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import parse_qs, unquote, urlsplit

from aof_index.build.sources import source_label
from aof_index.errors import AofIndexError, ManifestError, ManifestIssue
from aof_index.spec.knowledge_base import (
    ConfluenceSource,
    GitHubSource,
    GitLabSource,
    GitSource,
    KnowledgeBase,
    KnowledgeSource,
)

__all__ = [
    "DEFAULT_REPLAY_WINDOW",
    "Provider",
    "WebhookEvent",
    "WebhookReceiver",
    "WebhookRejected",
    "default_webhook_path",
]

logger = logging.getLogger("aof_index.knowledge.webhooks")

Provider = Literal["github", "gitlab", "confluence"]
PROVIDERS: tuple[Provider, ...] = ("github", "gitlab", "confluence")
DEFAULT_REPLAY_WINDOW = timedelta(days=7)
"""How long a delivery id is remembered (and a second delivery with it refused)."""

_SECRET_FIELD = "spec.indexing.schedule.webhook.secret"
_SHOWN_MAX = 80

# GitHub events whose payload names the repository and what the reader indexes for it.
_GITHUB_ITEM_EVENTS: dict[str, str] = {
    "issues": "include_issues",
    "issue_comment": "include_issues",  # a comment on a PR carries issue.pull_request
    "pull_request": "include_prs",
    "pull_request_review": "include_prs",
    "pull_request_review_comment": "include_prs",
    "pull_request_review_thread": "include_prs",
    "discussion": "include_discussions",
    "discussion_comment": "include_discussions",
}


@dataclass(frozen=True)
class WebhookEvent:
    """A verified, first-time delivery and the sources it affects.

    Attributes:
        provider: ``github``, ``gitlab`` or ``confluence``.
        delivery_id: the id the delivery was deduplicated by (see
            :meth:`WebhookReceiver.receive` for where it comes from per provider).
        event: the provider's event name: GitHub's ``X-GitHub-Event`` (``push``), GitLab's
            ``X-Gitlab-Event`` (``Push Hook``), Confluence's payload ``event``
            (``page_updated``).
        sources: names of this KnowledgeBase's enabled sources to sync incrementally, in
            manifest order (``sources[].name``, else ``<type>-<index>`` as the sync names
            them); empty when the delivery is genuine but affects none of them.
    """

    provider: Provider
    delivery_id: str
    event: str
    sources: tuple[str, ...]


class WebhookRejected(AofIndexError):
    """A delivery was refused; answer it with :attr:`status_code` and :attr:`reason`.

    Status codes: 400 malformed (no provider headers, no delivery id, body not a JSON
    object), 401 missing or wrong signature or token, 404 provider not enabled for this
    KnowledgeBase, 409 delivery id already received. The reason never contains the secret.
    """

    def __init__(self, status_code: int, reason: str, *, provider: str | None = None) -> None:
        self.status_code = status_code
        self.reason = reason
        self.provider = provider
        super().__init__(f"{status_code}: {reason}")


def default_webhook_path(resource: KnowledgeBase) -> str:
    """``/webhooks/<namespace>/<name>``: the path used when the manifest names none."""
    return f"/webhooks/{resource.metadata.namespace}/{resource.metadata.name}"


class WebhookReceiver:
    """Verifies, deduplicates and routes the webhook deliveries of one KnowledgeBase.

    Args:
        resource: the KnowledgeBase.
        deliveries_db: SQLite file recording delivery ids (WAL mode; may be shared by
            several processes and by several KnowledgeBases: ids are kept per
            KnowledgeBase). Created on the first delivery; the constructor does no I/O.
        secret: the shared secret, overriding ``spec.indexing.schedule.webhook.secret``
            (e.g. resolved from a Kubernetes Secret by the caller).
        replay_window: how long a delivery id is remembered; a delivery repeating an id
            seen within it is refused with 409. Older ids are pruned.

    Raises:
        ManifestError: (an :class:`AofIndexError`) when no secret is configured: unverified
            deliveries are never accepted.

    Attributes:
        path: the URL path to serve: ``spec.indexing.schedule.webhook.path``, else
            ``/webhooks/<namespace>/<name>``.
        providers: the providers accepted (``spec.sync.webhook.providers``, else all three).
        enabled: false when ``spec.sync.webhook.enabled`` or
            ``spec.indexing.schedule.webhook.enabled`` is ``false``; every delivery is then
            refused with 404.
    """

    def __init__(
        self,
        resource: KnowledgeBase,
        deliveries_db: Path,
        *,
        secret: str | None = None,
        replay_window: timedelta = DEFAULT_REPLAY_WINDOW,
    ) -> None:
        spec = resource.spec
        schedule = spec.indexing.schedule if spec.indexing else None
        hook = schedule.webhook if schedule else None
        sync_hook = spec.sync.webhook if spec.sync else None
        if secret is None and hook is not None and hook.secret is not None:
            secret = hook.secret.get_secret_value()
        if not secret:
            raise ManifestError(
                resource.ref,
                [
                    ManifestIssue(
                        _SECRET_FIELD,
                        "no webhook secret is configured, and unverified deliveries are never "
                        "accepted; set indexing.schedule.webhook.secret to the secret entered "
                        "in the GitHub/GitLab/Confluence webhook settings (or pass secret=)",
                    )
                ],
            )
        if replay_window <= timedelta(0):
            raise AofIndexError(f"replay_window must be positive (got {replay_window})")
        self.resource = resource
        self.deliveries_db = Path(deliveries_db)
        self.replay_window = replay_window
        self._secret = secret.encode()
        path = hook.path if hook is not None and hook.path else default_webhook_path(resource)
        self.path: str = path if path.startswith("/") else "/" + path
        self.providers: tuple[Provider, ...] = (
            tuple(p for p in PROVIDERS if p in sync_hook.providers)
            if sync_hook is not None and sync_hook.providers is not None
            else PROVIDERS
        )
        self.enabled: bool = not (
            (sync_hook is not None and sync_hook.enabled is False)
            or (hook is not None and hook.enabled is False)
        )
        self._key = f"{resource.metadata.namespace}/{resource.metadata.name}"

    def __repr__(self) -> str:  # never shows the secret
        return f"WebhookReceiver({self.resource.ref}, path={self.path!r})"

    # -- public API ----------------------------------------------------------------------
    def receive(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Verify one delivery, record its id, and return the sources it affects.

        ``headers`` are the request headers (names in any case); ``body`` is the raw request
        body, exactly as received (signatures are computed over these bytes).

        Delivery ids: GitHub ``X-GitHub-Delivery`` (kept on redelivery); GitLab
        ``Idempotency-Key`` (GitLab 17.4+, kept on retries), else ``X-Gitlab-Event-UUID``
        qualified by a hash of the body (GitLab sends the same Event-UUID for every hook
        one request triggers), else ``X-Gitlab-Webhook-UUID`` (fresh on every request);
        Confluence ``sha256:`` and a hash of the body (Confluence Data Center documents no
        delivery id header; its payload carries the event's millisecond ``timestamp``, so
        distinct events have distinct bodies and a resent one has the same).

        Raises:
            WebhookRejected: with status 400, 401, 404 or 409 (see the class).
        """
        lower = {str(k).lower(): str(v) for k, v in headers.items()}
        provider = self._provider(lower)
        if not self.enabled:
            raise self._reject(
                404,
                provider,
                None,
                "webhooks are disabled for this knowledge base (spec.sync.webhook.enabled or "
                "spec.indexing.schedule.webhook.enabled is false)",
            )
        if provider not in self.providers:
            raise self._reject(
                404,
                provider,
                None,
                f"provider {provider} is not enabled (spec.sync.webhook.providers: "
                f"{', '.join(self.providers)})",
            )
        if provider == "github":
            return self._github(lower, body)
        if provider == "gitlab":
            return self._gitlab(lower, body)
        return self._confluence(lower, body)

    def forget(self, event: WebhookEvent) -> None:
        """Drop ``event``'s delivery id, so a redelivery of it is accepted again.

        For a server that could not start or queue the sync after :meth:`receive` returned:
        call this before answering with an error, and the provider's retry goes through.
        """
        with self._connect() as conn:
            conn.execute(
                "DELETE FROM webhook_deliveries WHERE receiver = ? AND provider = ? "
                "AND delivery_id = ?",
                (self._key, event.provider, event.delivery_id),
            )

    # -- providers -----------------------------------------------------------------------
    def _provider(self, headers: Mapping[str, str]) -> Provider:
        if "x-github-event" in headers:
            return "github"
        if "x-gitlab-event" in headers:
            return "gitlab"
        if "x-hub-signature" in headers:
            return "confluence"
        raise self._reject(
            400,
            None,
            None,
            "cannot tell the provider: no X-GitHub-Event, X-Gitlab-Event or X-Hub-Signature "
            "header (a Confluence webhook must have a secret set, so it signs its deliveries)",
        )

    def _github(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        delivery = headers.get("x-github-delivery", "").strip() or None
        self._check_hmac("github", delivery, headers.get("x-hub-signature-256"), body, "256")
        event = headers["x-github-event"].strip()
        if delivery is None:
            raise self._reject(400, "github", None, "missing X-GitHub-Delivery header")
        content_type = headers.get("content-type", "")
        if "application/x-www-form-urlencoded" in content_type.lower():
            form = parse_qs(body.decode("utf-8", "replace"))
            body = form.get("payload", [""])[0].encode()
        payload = self._json("github", delivery, body)
        self._record("github", delivery)
        return self._event(
            "github", delivery, event, _route_github(self._sources(), event, payload)
        )

    def _gitlab(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        delivery = _gitlab_delivery_id(headers, body)
        token = headers.get("x-gitlab-token")
        if token is None:
            raise self._reject(
                401, "gitlab", delivery, "missing X-Gitlab-Token header (set the secret token)"
            )
        if not hmac.compare_digest(token.encode("utf-8", "replace"), self._secret):
            raise self._reject(401, "gitlab", delivery, "X-Gitlab-Token does not match the secret")
        event = headers["x-gitlab-event"].strip()
        if delivery is None:
            raise self._reject(
                400,
                "gitlab",
                None,
                "no Idempotency-Key, X-Gitlab-Event-UUID or X-Gitlab-Webhook-UUID header",
            )
        payload = self._json("gitlab", delivery, body)
        self._record("gitlab", delivery)
        return self._event("gitlab", delivery, event, _route_gitlab(self._sources(), payload))

    def _confluence(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        # Checked with the search tool (Confluence 7.7–9.x "Managing webhooks" and
        # developer.atlassian.com/server/confluence/webhooks): with a secret set, Confluence
        # Data Center signs each request with HMAC (HMACSha256 by default) over the body,
        # keyed with the secret, in the header X-Hub-Signature. The docs do not show the
        # value's format; Atlassian's webhooks plugin writes "sha256=<hex>", so that and a
        # bare hex digest are accepted. The docs name no delivery id header, so the id is a
        # hash of the body. Payloads are {"timestamp", "event", "userKey", "page"|"blog"|...};
        # a real page_updated example (PipedreamHQ/pipedream test event) has only page.id,
        # so when no space key is present every Confluence source is synced (see routing).
        delivery = "sha256:" + hashlib.sha256(body).hexdigest()[:32]
        self._check_hmac("confluence", delivery, headers.get("x-hub-signature"), body, "")
        payload = self._json("confluence", delivery, body)
        event = payload.get("event") or payload.get("webhookEvent")
        if not isinstance(event, str) or not event:
            raise self._reject(400, "confluence", delivery, "payload has no `event` name")
        self._record("confluence", delivery)
        return self._event(
            "confluence", delivery, event, _route_confluence(self._sources(), event, payload)
        )

    # -- steps ---------------------------------------------------------------------------
    def _check_hmac(
        self,
        provider: Provider,
        delivery: str | None,
        header: str | None,
        body: bytes,
        suffix: str,
    ) -> None:
        name = f"X-Hub-Signature{'-' + suffix if suffix else ''}"
        if header is None or not header.strip():
            hint = (
                " (GitHub sends it only when the webhook has a secret)"
                if provider == "github"
                else " (set a secret on the Confluence webhook)"
            )
            raise self._reject(401, provider, delivery, f"missing {name} header{hint}")
        given = header.strip()
        algorithm, sep, digest = given.partition("=")
        if not sep:
            algorithm, digest = "sha256", given
        if algorithm.lower() != "sha256" or (provider == "github" and not sep):
            raise self._reject(
                401, provider, delivery, f"{name} is not of the form sha256=<hex digest>"
            )
        expected = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(
            expected.encode(), digest.strip().lower().encode("utf-8", "replace")
        ):
            raise self._reject(401, provider, delivery, f"{name} does not match the body")

    def _json(self, provider: Provider, delivery: str | None, body: bytes) -> dict[str, Any]:
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise self._reject(
                400,
                provider,
                delivery,
                f"body is not JSON ({exc.__class__.__name__}); "
                "set the webhook's content type to application/json",
            ) from None
        if not isinstance(payload, dict):
            raise self._reject(400, provider, delivery, "body is not a JSON object")
        return cast(dict[str, Any], payload)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.deliveries_db.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.deliveries_db, timeout=30)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS webhook_deliveries ("
                " receiver TEXT NOT NULL, provider TEXT NOT NULL, delivery_id TEXT NOT NULL,"
                " received_at REAL NOT NULL, PRIMARY KEY (receiver, provider, delivery_id))"
            )
            conn.execute(
                "CREATE INDEX IF NOT EXISTS webhook_deliveries_received"
                " ON webhook_deliveries (received_at)"
            )
            with conn:
                yield conn
        finally:
            conn.close()

    def _record(self, provider: Provider, delivery: str) -> None:
        """Record ``delivery``; refuse it (409) if it is already recorded.

        ``INSERT OR IGNORE`` on the primary key is atomic in SQLite, so of two processes
        racing on one id exactly one inserts the row (rowcount 1) and the other sees 0.
        """
        now = time.time()
        try:
            with self._connect() as conn:
                conn.execute(
                    "DELETE FROM webhook_deliveries WHERE received_at < ?",
                    (now - self.replay_window.total_seconds(),),
                )
                inserted = conn.execute(
                    "INSERT OR IGNORE INTO webhook_deliveries"
                    " (receiver, provider, delivery_id, received_at) VALUES (?, ?, ?, ?)",
                    (self._key, provider, delivery, now),
                ).rowcount
        except sqlite3.Error as exc:
            raise AofIndexError(
                f"webhook delivery database {self.deliveries_db}: {exc}; check that the "
                "folder is writable and on a local disk (SQLite WAL needs shared memory)"
            ) from exc
        if inserted != 1:
            raise self._reject(
                409,
                provider,
                delivery,
                f"delivery {_shown(self._mask(delivery))} was already received",
            )

    def _sources(self) -> list[tuple[str, KnowledgeSource]]:
        return [
            (source_label(source, index), source)
            for index, source in enumerate(self.resource.spec.sources or [])
            if source.enabled
        ]

    def _event(
        self, provider: Provider, delivery: str, event: str, sources: Iterable[str]
    ) -> WebhookEvent:
        order = {name: index for index, (name, _) in enumerate(self._sources())}
        routed = sorted(set(sources), key=order.__getitem__)
        result = WebhookEvent(provider, delivery, event, tuple(routed))
        logger.info(
            "%s",
            self._mask(
                f"webhook {provider} {_shown(event)} delivery {_shown(self._mask(delivery))} for "
                f"{self.resource.ref}: sync {', '.join(result.sources) or 'nothing'}"
            ),
        )
        return result

    def _mask(self, text: str) -> str:
        """``text`` with the secret replaced by ``***`` (a sender may misplace it)."""
        secret = self._secret.decode("utf-8", "replace")
        return text.replace(secret, "***") if secret in text else text

    def _reject(
        self, status: int, provider: Provider | None, delivery: str | None, reason: str
    ) -> WebhookRejected:
        reason = self._mask(reason)
        shown = _shown(self._mask(delivery)) if delivery is not None else "-"
        logger.warning(
            "%s",
            self._mask(
                f"webhook rejected ({status}) for {self.resource.ref}: "
                f"provider={provider or 'unknown'} delivery={shown}: {reason}"
            ),
        )
        return WebhookRejected(status, reason, provider=provider)


# --- delivery ids ------------------------------------------------------------------------


def _gitlab_delivery_id(headers: Mapping[str, str], body: bytes) -> str | None:
    # From GitLab's "Delivery headers" docs: Idempotency-Key (17.4+) "remains consistent
    # across webhook retries"; X-Gitlab-Event-UUID (14.8+) is shared by recursive hooks and
    # by every hook one request triggers, so it is qualified with a hash of the body;
    # X-Gitlab-Webhook-UUID (16.2+) is fresh on every request, retries included.
    key = headers.get("idempotency-key", "").strip()
    if key:
        return key
    event_uuid = headers.get("x-gitlab-event-uuid", "").strip()
    if event_uuid:
        return f"{event_uuid}/{hashlib.sha256(body).hexdigest()[:16]}"
    return headers.get("x-gitlab-webhook-uuid", "").strip() or None


def _shown(value: str) -> str:
    """``value`` made safe for a log line: printable, at most 80 characters."""
    text = value.encode("unicode_escape").decode("ascii")
    return text if len(text) <= _SHOWN_MAX else text[: _SHOWN_MAX - 3] + "..."


# --- routing -----------------------------------------------------------------------------

_SCP_URL = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>(?!//).+)$")


def _repo_key(url: object) -> tuple[str, str] | None:
    """``(host, owner/repo)`` of a clone or web URL, lower case, without ``.git``."""
    if not isinstance(url, str) or not url.strip():
        return None
    text = url.strip()
    if "://" in text:
        parts = urlsplit(text)
        host, path = (parts.hostname or ""), parts.path
    else:
        match = _SCP_URL.match(text)  # git@github.com:owner/repo.git
        if match is None:
            return None
        host, path = match["host"], match["path"]
    path = unquote(path).strip("/")
    path = path.removesuffix(".git").rstrip("/")
    if not host or not path:
        return None
    return host.lower(), path.lower()


def _branch_of(ref: object) -> str | None:
    if isinstance(ref, str) and ref.startswith("refs/heads/"):
        return ref.removeprefix("refs/heads/")
    return None


def _ref_matches(configured: str, pushed_ref: str) -> bool:
    """A source's ``ref``/``branch`` (``main``, ``refs/heads/main``, ``v1.0``) vs a pushed ref."""
    wanted = configured.strip()
    return pushed_ref in {wanted, f"refs/heads/{wanted}", f"refs/tags/{wanted}"}


def _wanted_refs(section: GitHubSource | GitLabSource | GitSource, default: object) -> set[str]:
    """The refs a source follows: its setting, plus the repository's default branch when
    the setting is left at its default (the reader then reads ``main``; syncing for both
    keeps a push to either from being missed)."""
    field = "branch" if isinstance(section, GitHubSource) else "ref"
    refs = {str(getattr(section, field))}
    if field not in section.model_fields_set and isinstance(default, str) and default:
        refs.add(default)
    return refs


def _git_sources(
    sources: list[tuple[str, KnowledgeSource]], urls: Iterable[object], ref: str, default: object
) -> Iterator[str]:
    keys = {key for key in map(_repo_key, urls) if key is not None}
    for name, source in sources:
        if source.type != "Git" or source.git is None:
            continue
        if _repo_key(source.git.url) in keys and any(
            _ref_matches(wanted, ref) for wanted in _wanted_refs(source.git, default)
        ):
            yield name


def _mapping(value: object) -> Mapping[str, Any]:
    return cast(Mapping[str, Any], value) if isinstance(value, Mapping) else {}


def _route_github(
    sources: list[tuple[str, KnowledgeSource]], event: str, payload: Mapping[str, Any]
) -> list[str]:
    repo = _mapping(payload.get("repository"))
    full_name = str(repo.get("full_name") or "").lower()
    default = repo.get("default_branch")

    def same_repo(cfg: GitHubSource) -> bool:
        return bool(full_name) and f"{cfg.owner}/{cfg.repo}".lower() == full_name

    if event == "push":
        ref = str(payload.get("ref") or "")
        if not ref:
            return []
        routed = [
            name
            for name, source in sources
            if source.type == "GitHub"
            and source.github is not None
            and same_repo(source.github)
            and _branch_of(ref) is not None
            and any(_ref_matches(b, ref) for b in _wanted_refs(source.github, default))
        ]
        urls = [
            repo.get("clone_url"),
            repo.get("ssh_url"),
            repo.get("html_url"),
            repo.get("git_url"),
            repo.get("url"),
        ]
        return routed + list(_git_sources(sources, urls, ref, default))
    flag = _GITHUB_ITEM_EVENTS.get(event)
    if flag is None:  # ping, create, delete, release, ...: nothing the readers index
        return []
    if event == "issue_comment" and "pull_request" in _mapping(payload.get("issue")):
        flag = "include_prs"
    return [
        name
        for name, source in sources
        if source.type == "GitHub"
        and source.github is not None
        and same_repo(source.github)
        and bool(getattr(source.github, flag))
    ]


def _route_gitlab(
    sources: list[tuple[str, KnowledgeSource]], payload: Mapping[str, Any]
) -> list[str]:
    # Push Hook and Tag Push Hook carry object_kind push / tag_push; merge requests, issues,
    # wikis and pipelines are not indexed by the GitLab reader.
    if payload.get("object_kind") not in {"push", "tag_push"}:
        return []
    ref = str(payload.get("ref") or "")
    project = _mapping(payload.get("project"))
    default = project.get("default_branch")
    ids = {str(payload.get("project_id") or project.get("id") or "")}
    path = str(project.get("path_with_namespace") or "").lower()
    routed: list[str] = []
    for name, source in sources:
        if source.type != "GitLab" or source.gitlab is None or not ref:
            continue
        cfg = source.gitlab
        wanted = unquote(str(cfg.project_id or "")).strip().strip("/")
        if not wanted or not (wanted in ids or (path and wanted.lower() == path)):
            continue
        if any(_ref_matches(r, ref) for r in _wanted_refs(cfg, default)):
            routed.append(name)
    urls = [
        project.get("git_http_url"),
        project.get("git_ssh_url"),
        project.get("web_url"),
        _mapping(payload.get("repository")).get("homepage"),
    ]
    return routed + list(_git_sources(sources, urls, ref, default)) if ref else routed


def _space_keys(payload: Mapping[str, Any]) -> set[str]:
    keys: set[str] = set()
    for field in ("page", "blog", "blogpost", "content", "attachment", "comment"):
        item = _mapping(payload.get(field))
        for value in (item.get("spaceKey"), _mapping(item.get("space")).get("key")):
            if isinstance(value, str) and value:
                keys.add(value.upper())
    for value in (payload.get("spaceKey"), _mapping(payload.get("space")).get("key")):
        if isinstance(value, str) and value:
            keys.add(value.upper())
    return keys


def _route_confluence(
    sources: list[tuple[str, KnowledgeSource]], event: str, payload: Mapping[str, Any]
) -> list[str]:
    kind = event.split("_", 1)[0]
    if kind not in {"page", "blog", "blogpost", "attachment"}:
        return []  # space_*, label_*, user_*, comment_*, ...: no page content changed
    keys = _space_keys(payload)
    routed: list[str] = []
    for name, source in sources:
        cfg: ConfluenceSource | None = source.confluence
        if source.type != "Confluence" or cfg is None:
            continue
        if kind == "attachment" and not cfg.include_attachments:
            continue
        # No space key in the payload (Confluence Data Center often sends only page.id), or
        # a CQL-only source spanning spaces: sync it; an extra incremental sync is cheap,
        # a missed update is not.
        if not keys or cfg.space_key is None or cfg.space_key.upper() in keys:
            routed.append(name)
    return routed
