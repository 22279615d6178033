"""Webhook deliveries: verified, deduplicated by delivery id, routed to the affected sources."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import multiprocessing
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from aof_index.errors import AofIndexError, ManifestError
from aof_index.knowledge.webhooks import WebhookEvent, WebhookReceiver, WebhookRejected
from aof_index.spec import load_knowledge_base
from aof_index.spec.knowledge_base import KnowledgeBase

SECRET = "wh-s3cr3t-Value-91f2"

MANIFEST = f"""
apiVersion: aof.agenticops.org/v1alpha1
kind: KnowledgeBase
metadata:
  name: runbooks
  namespace: sre
spec:
  sources:
    - name: docs
      type: GitHub
      github: {{owner: Acme, repo: Runbooks, branch: main, includeIssues: true}}
    - name: other-repo
      type: GitHub
      github: {{owner: acme, repo: platform, branch: main}}
    - name: release-branch
      type: GitHub
      github: {{owner: acme, repo: runbooks, branch: release, includePRs: true}}
    - name: mirror
      type: Git
      git: {{url: "git@GitHub.com:acme/runbooks.git", ref: main}}
    - name: disabled
      enabled: false
      type: GitHub
      github: {{owner: acme, repo: runbooks, branch: main}}
    - name: infra
      type: GitLab
      gitlab: {{projectId: 4242, ref: main}}
    - name: infra-by-path
      type: GitLab
      gitlab: {{projectId: ops/infra, ref: develop}}
    - name: wiki
      type: Confluence
      confluence: {{baseUrl: "https://wiki.example.com", spaceKey: OPS}}
    - name: wiki-dev
      type: Confluence
      confluence: {{baseUrl: "https://wiki.example.com", spaceKey: DEV}}
  indexing:
    schedule:
      type: webhook
      webhook:
        enabled: true
        secret: {SECRET}
  sync:
    webhook:
      enabled: true
      providers: [github, gitlab, confluence]
"""


def kb(text: str = MANIFEST) -> KnowledgeBase:
    return load_knowledge_base(text)


def receiver(tmp_path: Path, resource: KnowledgeBase | None = None, **kw: Any) -> WebhookReceiver:
    return WebhookReceiver(resource or kb(), tmp_path / "deliveries.db", **kw)


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github(
    payload: dict[str, Any], *, event: str = "push", delivery: str = "d-1", **extra: str
) -> tuple[dict[str, str], bytes]:
    body = json.dumps(payload).encode()
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": sign(body),
        "Content-Type": "application/json",
    }
    headers.update(extra)
    return headers, body


def push(ref: str = "refs/heads/main", full_name: str = "acme/runbooks") -> dict[str, Any]:
    owner, name = full_name.split("/")
    return {
        "ref": ref,
        "repository": {
            "full_name": full_name,
            "default_branch": "main",
            "clone_url": f"https://github.com/{owner}/{name}.git",
            "ssh_url": f"git@github.com:{owner}/{name}.git",
            "html_url": f"https://github.com/{owner}/{name}",
        },
    }


def gitlab_push(ref: str = "refs/heads/main", project_id: int = 4242) -> bytes:
    return json.dumps(
        {
            "object_kind": "push",
            "ref": ref,
            "project_id": project_id,
            "project": {
                "id": project_id,
                "path_with_namespace": "ops/infra",
                "default_branch": "main",
                "git_http_url": "https://gitlab.example.com/ops/infra.git",
                "git_ssh_url": "git@gitlab.example.com:ops/infra.git",
                "web_url": "https://gitlab.example.com/ops/infra",
            },
        }
    ).encode()


def rejected(rec: WebhookReceiver, headers: dict[str, str], body: bytes) -> WebhookRejected:
    with pytest.raises(WebhookRejected) as info:
        rec.receive(headers, body)
    return info.value


# --- GitHub ------------------------------------------------------------------------------


def test_github_push_routes_to_the_matching_source_only(tmp_path: Path) -> None:
    event = receiver(tmp_path).receive(*github(push()))
    # docs (owner/repo case-insensitive), mirror (Git by ssh URL); not other-repo, not the
    # release branch, not the disabled source.
    assert event == WebhookEvent("github", "d-1", "push", ("docs", "mirror"))


def test_github_push_to_another_branch_or_repo_routes_nowhere(tmp_path: Path) -> None:
    rec = receiver(tmp_path)
    assert rec.receive(*github(push("refs/heads/feature-x"), delivery="a")).sources == ()
    assert rec.receive(*github(push("refs/tags/v1.0"), delivery="b")).sources == ()
    assert rec.receive(*github(push(full_name="acme/platform"), delivery="c")).sources == (
        "other-repo",
    )
    assert rec.receive(*github(push("refs/heads/release"), delivery="d")).sources == (
        "release-branch",
    )


def test_github_branch_left_unset_follows_the_default_branch(tmp_path: Path) -> None:
    resource = kb(MANIFEST.replace("repo: platform, branch: main", "repo: platform"))
    payload = push("refs/heads/trunk", full_name="acme/platform")
    payload["repository"]["default_branch"] = "trunk"
    assert receiver(tmp_path, resource).receive(*github(payload)).sources == ("other-repo",)


def test_git_source_matched_by_https_url(tmp_path: Path) -> None:
    resource = kb(
        MANIFEST.replace(
            '"git@GitHub.com:acme/runbooks.git"', '"https://GITHUB.com/Acme/runbooks/"'
        )
    )
    assert "mirror" in receiver(tmp_path, resource).receive(*github(push())).sources


def test_github_ping_is_verified_and_routes_nowhere(tmp_path: Path) -> None:
    headers, body = github({"zen": "Keep it logically awesome.", "hook_id": 1}, event="ping")
    assert receiver(tmp_path).receive(headers, body) == WebhookEvent("github", "d-1", "ping", ())


def test_github_issue_and_pr_events_route_by_include_flags(tmp_path: Path) -> None:
    rec = receiver(tmp_path)
    repo = push()["repository"]
    issue = rec.receive(*github({"action": "opened", "repository": repo}, event="issues"))
    assert issue.sources == ("docs",)
    pr = rec.receive(
        *github({"action": "opened", "repository": repo}, event="pull_request", delivery="d-2")
    )
    assert pr.sources == ("release-branch",)
    on_pr = {"issue": {"number": 7, "pull_request": {}}, "repository": repo}
    comment = rec.receive(*github(on_pr, event="issue_comment", delivery="d-3"))
    assert comment.sources == ("release-branch",)


def test_a_tag_named_like_the_branch_is_not_a_branch_push(tmp_path: Path) -> None:
    # the GitHub source reads branch main; a tag "main" does not change it (the Git source's
    # ref may name a tag, so it still follows)
    assert receiver(tmp_path).receive(*github(push("refs/tags/main"))).sources == ("mirror",)


def test_github_header_names_are_case_insensitive(tmp_path: Path) -> None:
    headers, body = github(push())
    lowered = {k.lower(): v for k, v in headers.items()}
    upper = {k.upper(): v for k, v in headers.items()}
    rec = receiver(tmp_path)
    assert rec.receive(lowered, body).sources == ("docs", "mirror")
    upper["X-GITHUB-DELIVERY"] = "d-2"
    assert rec.receive(upper, body).sources == ("docs", "mirror")


def test_github_form_encoded_payload_is_accepted(tmp_path: Path) -> None:
    from urllib.parse import urlencode

    body = urlencode({"payload": json.dumps(push())}).encode()
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "d-1",
        "X-Hub-Signature-256": sign(body),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    assert receiver(tmp_path).receive(headers, body).sources == ("docs", "mirror")


def test_wrong_signature_is_401(tmp_path: Path) -> None:
    headers, body = github(push())
    headers["X-Hub-Signature-256"] = sign(body, secret="not-the-secret")
    err = rejected(receiver(tmp_path), headers, body)
    assert err.status_code == 401 and "does not match" in err.reason


def test_tampered_body_is_401(tmp_path: Path) -> None:
    headers, body = github(push())
    err = rejected(receiver(tmp_path), headers, body.replace(b"main", b"evil"))
    assert err.status_code == 401


def test_missing_signature_is_401(tmp_path: Path) -> None:
    headers, body = github(push())
    del headers["X-Hub-Signature-256"]
    headers["X-Hub-Signature"] = "sha1=" + hmac.new(SECRET.encode(), body, "sha1").hexdigest()
    err = rejected(receiver(tmp_path), headers, body)
    assert err.status_code == 401 and "X-Hub-Signature-256" in err.reason
    headers["X-Hub-Signature-256"] = " "
    err = rejected(receiver(tmp_path), headers, body)
    assert err.status_code == 401 and "missing" in err.reason


def test_rejected_delivery_is_not_recorded(tmp_path: Path) -> None:
    rec = receiver(tmp_path)
    headers, body = github(push())
    good = dict(headers)
    headers["X-Hub-Signature-256"] = "sha256=" + "0" * 64
    assert rejected(rec, headers, body).status_code == 401
    assert rec.receive(good, body).delivery_id == "d-1"  # the forged attempt burnt no id


def test_replay_is_409(tmp_path: Path) -> None:
    rec = receiver(tmp_path)
    headers, body = github(push())
    rec.receive(headers, body)
    err = rejected(rec, headers, body)
    assert err.status_code == 409 and "d-1" in err.reason


def test_replay_is_409_across_receivers_sharing_the_db(tmp_path: Path) -> None:
    headers, body = github(push())
    receiver(tmp_path).receive(headers, body)
    assert rejected(receiver(tmp_path), headers, body).status_code == 409


def test_ids_are_kept_per_knowledge_base(tmp_path: Path) -> None:
    headers, body = github(push())
    receiver(tmp_path).receive(headers, body)
    other = kb(MANIFEST.replace("name: runbooks", "name: handbook"))
    assert receiver(tmp_path, other).receive(headers, body).delivery_id == "d-1"


def test_ids_older_than_the_replay_window_are_pruned(tmp_path: Path) -> None:
    rec = receiver(tmp_path, replay_window=timedelta(hours=1))
    headers, body = github(push())
    rec.receive(headers, body)
    with sqlite3.connect(tmp_path / "deliveries.db") as conn:
        conn.execute("UPDATE webhook_deliveries SET received_at = received_at - 7200")
    rec.receive(*github(push(), delivery="d-2"))  # prunes d-1
    with sqlite3.connect(tmp_path / "deliveries.db") as conn:
        ids = [row[0] for row in conn.execute("SELECT delivery_id FROM webhook_deliveries")]
    assert ids == ["d-2"]
    assert rec.receive(headers, body).delivery_id == "d-1"


def test_forget_lets_a_redelivery_through(tmp_path: Path) -> None:
    rec = receiver(tmp_path)
    headers, body = github(push())
    event = rec.receive(headers, body)
    rec.forget(event)
    assert rec.receive(headers, body) == event


def _race(db: str, headers: dict[str, str], body: bytes, results: Any) -> None:
    rec = WebhookReceiver(kb(), Path(db))
    try:
        rec.receive(headers, body)
        results.put("accepted")
    except WebhookRejected as exc:
        results.put(exc.status_code)


def test_two_processes_racing_on_one_id_only_one_wins(tmp_path: Path) -> None:
    headers, body = github(push())
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_race, args=(str(tmp_path / "d.db"), headers, body, results))
        for _ in range(4)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
    outcomes = sorted(str(results.get(timeout=5)) for _ in procs)
    assert outcomes == ["409", "409", "409", "accepted"]


def test_missing_delivery_id_is_400(tmp_path: Path) -> None:
    headers, body = github(push())
    del headers["X-GitHub-Delivery"]
    assert rejected(receiver(tmp_path), headers, body).status_code == 400


def test_malformed_json_is_400(tmp_path: Path) -> None:
    body = b'{"ref": "refs/heads/main",'
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1"}
    headers["X-Hub-Signature-256"] = sign(body)
    err = rejected(receiver(tmp_path), headers, body)
    assert err.status_code == 400 and "JSON" in err.reason
    body = b"[1, 2]"
    headers["X-Hub-Signature-256"] = sign(body)
    assert rejected(receiver(tmp_path), headers, body).status_code == 400


def test_unknown_provider_is_400(tmp_path: Path) -> None:
    err = rejected(receiver(tmp_path), {"Content-Type": "application/json"}, b"{}")
    assert err.status_code == 400 and "provider" in err.reason


# --- GitLab ------------------------------------------------------------------------------


def gitlab_headers(token: str = SECRET, **extra: str) -> dict[str, str]:
    headers = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": token, "Idempotency-Key": "k-1"}
    headers.update(extra)
    return headers


def test_gitlab_push_with_the_right_token_routes_by_project_id_and_path(tmp_path: Path) -> None:
    rec = receiver(tmp_path)
    event = rec.receive(gitlab_headers(), gitlab_push())
    assert event == WebhookEvent("gitlab", "k-1", "Push Hook", ("infra",))
    develop = rec.receive(
        gitlab_headers(**{"Idempotency-Key": "k-2"}), gitlab_push("refs/heads/develop")
    )
    assert develop.sources == ("infra-by-path",)
    other = rec.receive(gitlab_headers(**{"Idempotency-Key": "k-3"}), gitlab_push(project_id=7))
    assert other.sources == ()


def test_gitlab_wrong_or_missing_token_is_401(tmp_path: Path) -> None:
    rec = receiver(tmp_path)
    err = rejected(rec, gitlab_headers(token=SECRET + "x"), gitlab_push())
    assert err.status_code == 401 and "X-Gitlab-Token" in err.reason
    headers = gitlab_headers()
    del headers["X-Gitlab-Token"]
    assert rejected(rec, headers, gitlab_push()).status_code == 401


def test_gitlab_replay_by_idempotency_key_is_409(tmp_path: Path) -> None:
    rec = receiver(tmp_path)
    rec.receive(gitlab_headers(), gitlab_push())
    assert rejected(rec, gitlab_headers(), gitlab_push()).status_code == 409


def test_gitlab_event_uuid_is_qualified_by_the_body(tmp_path: Path) -> None:
    rec = receiver(tmp_path)
    headers = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET}
    headers["X-Gitlab-Event-UUID"] = "e-1"
    first = rec.receive(headers, gitlab_push())
    assert first.delivery_id.startswith("e-1/")
    # another hook fired by the same request: same Event-UUID, different body
    assert rec.receive(headers, gitlab_push(project_id=7)).sources == ()
    assert rejected(rec, headers, gitlab_push()).status_code == 409


def test_gitlab_git_source_by_url(tmp_path: Path) -> None:
    resource = kb(
        MANIFEST.replace(
            '"git@GitHub.com:acme/runbooks.git"', '"https://gitlab.example.com/ops/infra"'
        )
    )
    event = receiver(tmp_path, resource).receive(gitlab_headers(), gitlab_push())
    assert event.sources == ("mirror", "infra")  # manifest order


# --- Confluence --------------------------------------------------------------------------


def confluence(event: str, payload: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    body = json.dumps({"timestamp": 1768246501113, "event": event, **payload}).encode()
    return {"X-Hub-Signature": sign(body), "Content-Type": "application/json"}, body


def test_confluence_signature_and_space_routing(tmp_path: Path) -> None:
    rec = receiver(tmp_path)
    headers, body = confluence("page_updated", {"page": {"id": 1, "spaceKey": "ops"}})
    event = rec.receive(headers, body)
    assert event.provider == "confluence" and event.event == "page_updated"
    assert event.sources == ("wiki",)
    assert event.delivery_id.startswith("sha256:")
    assert rejected(rec, headers, body).status_code == 409  # same body: a replay


def test_confluence_bare_hex_signature_is_accepted(tmp_path: Path) -> None:
    headers, body = confluence("blog_created", {"blog": {"id": 2, "spaceKey": "DEV"}})
    headers["X-Hub-Signature"] = headers["X-Hub-Signature"].removeprefix("sha256=")
    assert receiver(tmp_path).receive(headers, body).sources == ("wiki-dev",)


def test_confluence_without_space_key_syncs_every_confluence_source(tmp_path: Path) -> None:
    headers, body = confluence("page_updated", {"page": {"id": 1015809}})
    assert receiver(tmp_path).receive(headers, body).sources == ("wiki", "wiki-dev")


def test_confluence_wrong_signature_is_401(tmp_path: Path) -> None:
    headers, body = confluence("page_updated", {"page": {"id": 1, "spaceKey": "OPS"}})
    headers["X-Hub-Signature"] = sign(body, "wrong")
    assert rejected(receiver(tmp_path), headers, body).status_code == 401


def test_confluence_non_content_event_routes_nowhere(tmp_path: Path) -> None:
    headers, body = confluence("space_created", {"space": {"key": "OPS"}})
    assert receiver(tmp_path).receive(headers, body).sources == ()


# --- configuration -----------------------------------------------------------------------


def test_provider_not_enabled_is_404(tmp_path: Path) -> None:
    resource = kb(MANIFEST.replace("[github, gitlab, confluence]", "[github]"))
    err = rejected(receiver(tmp_path, resource), gitlab_headers(), gitlab_push())
    assert err.status_code == 404 and "gitlab" in err.reason


def test_disabled_webhooks_are_404(tmp_path: Path) -> None:
    resource = kb(
        MANIFEST.replace("webhook:\n      enabled: true", "webhook:\n      enabled: false")
    )
    assert rejected(receiver(tmp_path, resource), *github(push())).status_code == 404


def test_no_secret_configured_refuses_to_construct(tmp_path: Path) -> None:
    resource = kb(MANIFEST.replace(f"        secret: {SECRET}\n", ""))
    with pytest.raises(ManifestError) as info:
        WebhookReceiver(resource, tmp_path / "d.db")
    assert isinstance(info.value, AofIndexError)
    assert "spec.indexing.schedule.webhook.secret" in str(info.value)
    assert not (tmp_path / "d.db").exists()


def test_secret_argument_overrides_the_manifest(tmp_path: Path) -> None:
    resource = kb(MANIFEST.replace(f"        secret: {SECRET}\n", ""))
    rec = WebhookReceiver(resource, tmp_path / "d.db", secret="from-a-k8s-secret")
    headers, body = github(push())
    headers["X-Hub-Signature-256"] = sign(body, "from-a-k8s-secret")
    assert rec.receive(headers, body).sources == ("docs", "mirror")
    assert rejected(rec, *github(push(), delivery="d-2")).status_code == 401


def test_path_from_manifest_or_default(tmp_path: Path) -> None:
    assert receiver(tmp_path).path == "/webhooks/sre/runbooks"
    resource = kb(
        MANIFEST.replace("enabled: true\n        secret", "path: hooks/rb\n        secret")
    )
    assert receiver(tmp_path, resource).path == "/hooks/rb"


def test_secret_never_in_reasons_or_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aof_index")
    rec = receiver(tmp_path)
    reasons = []
    headers, body = github(push())
    for bad in (
        {**headers, "X-Hub-Signature-256": sign(body, "wrong")},
        {**headers, "X-GitHub-Delivery": SECRET, "X-Hub-Signature-256": "sha256=00"},
        {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"},
        gitlab_headers(token=SECRET[:-1]),
        {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET, "Idempotency-Key": SECRET},
    ):
        try:
            rec.receive(bad, body)
        except WebhookRejected as exc:
            reasons.append(exc.reason + str(exc))
    rec.receive(headers, body)
    reasons.append(rejected(rec, headers, body).reason)  # a replay
    assert len(reasons) == 5  # the 4 forged deliveries and the replay
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 5
    # the GitLab delivery whose Idempotency-Key was the secret was genuine and accepted; it
    # is logged at INFO with the id masked
    text = "\n".join(reasons + [r.getMessage() for r in caplog.records])
    assert "rejected" in text and "github" in text
    assert SECRET not in text
    assert SECRET not in repr(rec)


def test_rejections_are_logged_with_provider_delivery_and_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aof_index.knowledge.webhooks")
    headers, body = github(push(), delivery="abc-123")
    headers["X-Hub-Signature-256"] = sign(body, "wrong")
    rejected(receiver(tmp_path), headers, body)
    (record,) = caplog.records
    assert record.name == "aof_index.knowledge.webhooks" and record.levelno == logging.WARNING
    message = record.getMessage()
    assert "github" in message and "abc-123" in message and "does not match" in message
