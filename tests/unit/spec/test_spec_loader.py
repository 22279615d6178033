"""Loading manifests: inputs, multi-document files, directories and every error path."""

from __future__ import annotations

from pathlib import Path

import pytest

from aof_index.errors import ManifestError, ManifestIssue
from aof_index.spec import (
    Agent,
    KnowledgeBase,
    Memory,
    load_knowledge_base,
    load_memory,
    load_resources,
    parse_resource,
)

HEADER = "apiVersion: aof.agenticops.org/v1alpha1\n"


def memory_doc(name: str = "ops-memory", spec: str = "{}") -> str:
    return f"{HEADER}kind: Memory\nmetadata:\n  name: {name}\nspec: {spec}\n"


def kb_doc(name: str = "runbooks", spec: str = "{}") -> str:
    return f"{HEADER}kind: KnowledgeBase\nmetadata:\n  name: {name}\nspec: {spec}\n"


def only_issue(exc: pytest.ExceptionInfo[ManifestError]) -> ManifestIssue:
    assert len(exc.value.issues) == 1, exc.value.issues
    return exc.value.issues[0]


# --- inputs ------------------------------------------------------------------------------


def test_text_path_and_str_path_all_load(tmp_path: Path) -> None:
    file = tmp_path / "memory.yaml"
    file.write_text(memory_doc())
    assert load_resources(memory_doc())[0].name == "ops-memory"
    assert load_resources(file)[0].name == "ops-memory"
    assert load_resources(str(file))[0].name == "ops-memory"


def test_multi_document_skips_empty_documents() -> None:
    text = f"---\n{memory_doc()}---\n---\n# only a comment\n---\n{kb_doc()}"
    resources = load_resources(text)
    assert [type(r) for r in resources] == [Memory, KnowledgeBase]


def test_directory_loads_sorted_yaml_and_yml(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text(kb_doc())
    (tmp_path / "a.yaml").write_text(memory_doc())
    (tmp_path / "notes.txt").write_text("not a manifest")
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "c.yaml").write_text("kind: Broken")
    assert [r.kind for r in load_resources(tmp_path)] == ["Memory", "KnowledgeBase"]


def test_directory_errors_name_each_file(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(memory_doc())
    (tmp_path / "bad.yaml").write_text(memory_doc(spec="{backend: {type: Reddis}}"))
    with pytest.raises(ManifestError) as info:
        load_resources(tmp_path)
    issue = only_issue(info)
    assert issue.file == str(tmp_path / "bad.yaml")
    assert str(tmp_path / "bad.yaml") in str(info.value)


def test_empty_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"no \*\.yaml or \*\.yml files"):
        load_resources(tmp_path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ManifestError) as info:
        load_resources(missing)
    assert info.value.source == str(missing)
    assert "file not found" in str(info.value)


@pytest.mark.parametrize("text", ["", "   \n", "# just a comment\n", "---\n---\n"])
def test_empty_input_is_a_clear_error(text: str, tmp_path: Path) -> None:
    file = tmp_path / "empty.yaml"
    file.write_text(text)
    with pytest.raises(ManifestError) as info:
        load_resources(file)
    assert "no manifest found (the input is empty)" in only_issue(info).message


def test_source_names_the_input_in_errors() -> None:
    with pytest.raises(ManifestError) as info:
        load_resources("kind: Memory\n", source="configmap/ops")
    assert info.value.source == "configmap/ops"
    assert str(info.value).startswith("configmap/ops: ")


def test_parse_resource_from_mapping() -> None:
    resource = parse_resource(
        {
            "apiVersion": HEADER.split()[1],
            "kind": "Agent",
            "metadata": {"name": "a"},
            "spec": {"model": "gpt-4o"},
        }
    )
    assert isinstance(resource, Agent)
    with pytest.raises(ManifestError) as info:
        parse_resource(
            {
                "apiVersion": HEADER.split()[1],
                "kind": "Memory",
                "metadata": {"name": "a"},
                "spec": {"bogus": 1},
            },
            source="k8s",
        )
    assert info.value.source == "k8s"
    assert only_issue(info).path == "spec.bogus"
    assert only_issue(info).line is None


# --- load_memory / load_knowledge_base ---------------------------------------------------


def test_load_memory_picks_by_name() -> None:
    text = memory_doc("first") + "---\n" + memory_doc("second") + "---\n" + kb_doc()
    assert load_memory(text, name="second").name == "second"
    assert load_knowledge_base(text).name == "runbooks"


def test_load_memory_with_several_lists_names() -> None:
    text = memory_doc("first") + "---\n" + memory_doc("second")
    with pytest.raises(ManifestError, match=r"2 Memory resources found \(first, second\)"):
        load_memory(text)
    with pytest.raises(ManifestError, match=r"no Memory named `third`; .*first, second"):
        load_memory(text, name="third")


def test_load_knowledge_base_when_there_is_none() -> None:
    with pytest.raises(ManifestError, match=r"no KnowledgeBase found; the input holds: Memory/m"):
        load_knowledge_base(memory_doc("m"))


# --- error reporting ---------------------------------------------------------------------


def test_bad_enum_lists_allowed_values_and_line() -> None:
    text = memory_doc(spec="\n  backend:\n    type: Reddis\n")
    with pytest.raises(ManifestError) as info:
        load_memory(text)
    issue = only_issue(info)
    assert issue.path == "spec.backend.type"
    assert issue.value == "Reddis"
    assert issue.line == 7
    assert "allowed values: Redis, PostgreSQL, SQLite, S3, Vector" in issue.message
    assert "did you mean `Redis`?" in issue.message


def test_enum_case_mistake_suggests_the_right_case() -> None:
    with pytest.raises(ManifestError) as info:
        load_memory(memory_doc(spec="{backend: {type: sqlite}}"))
    assert "did you mean `SQLite`?" in only_issue(info).message


def test_misspelt_field_suggests_the_right_one() -> None:
    text = memory_doc(
        spec="\n  semantic:\n    retrieval:\n      hybridSerch:\n        enabled: true\n"
    )
    with pytest.raises(ManifestError) as info:
        load_memory(text)
    issue = only_issue(info)
    assert issue.path == "spec.semantic.retrieval.hybridSerch"
    assert "unknown field `hybridSerch` (did you mean `hybridSearch`?)" in issue.message
    assert "allowed here: defaultTopK, hybridSearch, reranking, filtering" in issue.message
    assert issue.line == 8
    assert issue.value is None  # a mapping is not echoed


def test_nested_field_path_uses_camel_case() -> None:
    spec = "{semantic: {retrieval: {hybridSearch: {keywordWeight: high}}}}"
    with pytest.raises(ManifestError) as info:
        load_memory(memory_doc(spec=spec))
    issue = only_issue(info)
    assert issue.path == "spec.semantic.retrieval.hybridSearch.keywordWeight"
    assert issue.value == "high"
    assert "valid number" in issue.message


def test_list_items_are_indexed_in_the_path() -> None:
    spec = """
  sources:
    - {name: a, type: URL, url: {urls: [https://a]}}
    - {name: b, type: URL, url: {urls: [https://b]}}
    - name: c
      type: Jira
"""
    with pytest.raises(ManifestError) as info:
        load_knowledge_base(kb_doc(spec=spec))
    issue = only_issue(info)
    assert issue.path == "spec.sources[2].type"
    assert issue.line == 10
    assert "allowed values: GitHub, GitLab, Confluence" in issue.message


def test_bad_duration_and_bad_cron() -> None:
    spec = "{conversational: {ttl: 7days}, lifecycle: {backup: {schedule: '0 25 * * *'}}}"
    with pytest.raises(ManifestError) as info:
        load_memory(memory_doc(spec=spec))
    by_path = {i.path: i for i in info.value.issues}
    assert set(by_path) == {"spec.conversational.ttl", "spec.lifecycle.backup.schedule"}
    assert (
        "expected a duration like 30s, 15m, 24h or 7d" in by_path["spec.conversational.ttl"].message
    )
    assert by_path["spec.conversational.ttl"].value == "7days"
    assert "five-field cron" in by_path["spec.lifecycle.backup.schedule"].message


def test_wrong_type_is_reported() -> None:
    spec = "{conversational: {maxMessages: lots}, backend: Redis}"
    with pytest.raises(ManifestError) as info:
        load_memory(memory_doc(spec=spec))
    by_path = {i.path: i for i in info.value.issues}
    assert "valid integer" in by_path["spec.conversational.maxMessages"].message
    assert by_path["spec.backend"].message == "expected a mapping of fields, got str 'Redis'"


def test_negative_and_out_of_range_numbers() -> None:
    spec = "{observability: {tracing: {samplingRatio: 1.5}}, backend: {postgresql: {port: 0}}}"
    with pytest.raises(ManifestError) as info:
        load_memory(memory_doc(spec=spec))
    paths = {i.path for i in info.value.issues}
    assert paths == {"spec.observability.tracing.samplingRatio", "spec.backend.postgresql.port"}


def test_multi_document_error_names_the_document() -> None:
    text = memory_doc() + "---\n" + kb_doc(spec="{chunking: {strategy: sentences}}")
    with pytest.raises(ManifestError) as info:
        load_resources(text)
    issue = only_issue(info)
    assert (issue.document, issue.path) == (2, "spec.chunking.strategy")
    assert issue.line == 11
    assert "[document 2, line 11] spec.chunking.strategy" in str(info.value)


def test_single_document_has_no_document_number() -> None:
    with pytest.raises(ManifestError) as info:
        load_resources(kb_doc(spec="{chunking: {strategy: sentences}}"))
    assert only_issue(info).document is None


def test_unknown_kind_lists_known_kinds() -> None:
    with pytest.raises(ManifestError) as info:
        load_resources(f"{HEADER}kind: KnowledgeBse\nmetadata: {{name: x}}\n")
    issue = only_issue(info)
    assert issue.path == "kind"
    assert "did you mean `KnowledgeBase`?" in issue.message
    assert "known kinds: Agent, AgentFleet, AgentFlow, KnowledgeBase, Memory" in issue.message
    assert issue.line == 2


def test_missing_kind_and_api_version() -> None:
    with pytest.raises(ManifestError, match="kind: required field is missing; known kinds"):
        load_resources("metadata: {name: x}\n")
    with pytest.raises(ManifestError) as info:
        load_resources("kind: Memory\nmetadata: {name: x}\n")
    issue = only_issue(info)
    assert issue.path == "apiVersion"
    assert "aof.agenticops.org/v1alpha1" in issue.message


def test_wrong_api_version() -> None:
    text = "apiVersion: aof.dev/v1\nkind: Memory\nmetadata: {name: x}\n"
    with pytest.raises(ManifestError) as info:
        load_resources(text)
    issue = only_issue(info)
    assert (issue.path, issue.value) == ("apiVersion", "aof.dev/v1")
    assert "aof.agenticops.org/v1alpha1" in issue.message


def test_metadata_name_is_required_and_checked() -> None:
    with pytest.raises(ManifestError) as info:
        load_resources(f"{HEADER}kind: Memory\nmetadata: {{namespace: ops}}\n")
    assert only_issue(info).path == "metadata.name"
    assert only_issue(info).message == "required field is missing"
    with pytest.raises(ManifestError, match="Kubernetes object name"):
        load_resources(memory_doc(name="Ops_Memory"))


def test_document_that_is_not_a_mapping() -> None:
    with pytest.raises(ManifestError, match="expected a mapping with apiVersion, kind"):
        load_resources("- just\n- a list\n")


def test_malformed_yaml_reports_line_and_column() -> None:
    text = memory_doc(spec="\n  conversational:\n    maxMessages: [1, 2\n  semantic: {}\n")
    with pytest.raises(ManifestError) as info:
        load_resources(text)
    issue = only_issue(info)
    assert issue.message.startswith("invalid YAML: ")
    assert issue.line == 8
    assert "line 8, column 11" in issue.message


def test_unquoted_cron_starting_with_star_gets_a_hint() -> None:
    text = memory_doc(spec="\n  lifecycle:\n    backup:\n      schedule: */5 * * * *\n")
    with pytest.raises(ManifestError) as info:
        load_resources(text)
    issue = only_issue(info)
    assert "must be quoted" in issue.message
    assert issue.line == 8


def test_duplicate_keys_are_reported() -> None:
    text = memory_doc(spec="\n  conversational:\n    maxMessages: 10\n    maxMessages: 20\n")
    with pytest.raises(ManifestError) as info:
        load_resources(text)
    issue = only_issue(info)
    assert issue.path == "spec.conversational.maxMessages"
    assert "appears twice" in issue.message and "lines 7 and 8" in issue.message


def test_all_problems_of_a_document_are_reported_together() -> None:
    spec = "{backend: {type: Mongo}, conversational: {ttl: soon}, semantic: {enabld: true}}"
    with pytest.raises(ManifestError) as info:
        load_memory(memory_doc(spec=spec))
    assert len(info.value.issues) == 3
    assert "3 problem(s)" in str(info.value)


def test_secret_values_are_never_echoed_in_errors() -> None:
    spec = """
  sources:
    - name: api
      type: API
      api:
        endpoint: https://example.com
        password: hunter2-value
        token: [tok-value]
  indexing:
    schedule:
      webhook: {secret: 12345}
"""
    with pytest.raises(ManifestError) as info:
        load_knowledge_base(kb_doc(spec=spec))
    text = str(info.value) + repr(info.value.issues)
    assert "hunter2-value" not in text and "tok-value" not in text and "12345" not in text
    by_path = {i.path: i for i in info.value.issues}
    assert by_path["spec.sources[0].api.password"].value == "**********"
    assert by_path["spec.indexing.schedule.webhook.secret"].value == "**********"


def test_secret_ref_given_a_literal_secret_is_masked() -> None:
    spec = "{backend: {type: Redis, redis: {url: 'redis://r', secretRef: sk-live-123}}}"
    with pytest.raises(ManifestError) as info:
        load_memory(memory_doc(spec=spec))
    issue = only_issue(info)
    assert issue.path == "spec.backend.redis.secretRef"
    assert "sk-live-123" not in str(info.value)
    assert issue.value == "**********"
    assert "never the secret itself" in issue.message
