"""Pydantic models of the AOF manifests, YAML loading, field types and secret references.

The data layer of aof-index: :class:`Memory` and :class:`KnowledgeBase` custom resources,
and the memory/context sections of :class:`Agent`, :class:`AgentFleet` and
:class:`AgentFlow`. Python attributes are snake_case, YAML keys the camelCase names AOF
uses. Models do no I/O except :meth:`SecretRef.resolve`, which reads the environment or the
mounted secrets directory when called::

    from aof_index.spec import load_memory

    memory = load_memory("manifests/ops-memory.yaml")
    memory.spec.conversational.max_messages        # 1000 unless the manifest says otherwise
    memory.spec.conversational.ttl.timedelta        # datetime.timedelta(days=7)

Section models (``RedisBackend``, ``GitHubSource``, ``AgentRag``...) live in
:mod:`aof_index.spec.memory`, :mod:`aof_index.spec.knowledge_base` and
:mod:`aof_index.spec.agent`.
"""

from __future__ import annotations

from aof_index.spec.agent import Agent, AgentFleet, AgentFlow, AgentMemory, AgentSpec
from aof_index.spec.base import API_VERSION, ObjectMeta, Resource, SpecModel
from aof_index.spec.knowledge_base import KnowledgeBase, KnowledgeBaseSpec, KnowledgeSource
from aof_index.spec.loader import (
    KINDS,
    load_knowledge_base,
    load_memory,
    load_resources,
    manifest_files,
    parse_resource,
)
from aof_index.spec.memory import Memory, MemorySpec
from aof_index.spec.secrets import (
    GitCredentials,
    GitCredentialsSecretRef,
    SecretRef,
    resolve_secret,
    secret_env_var,
)
from aof_index.spec.types import CronSchedule, Duration, Size

__all__ = [
    "API_VERSION",
    "KINDS",
    "Agent",
    "AgentFleet",
    "AgentFlow",
    "AgentMemory",
    "AgentSpec",
    "CronSchedule",
    "Duration",
    "GitCredentials",
    "GitCredentialsSecretRef",
    "KnowledgeBase",
    "KnowledgeBaseSpec",
    "KnowledgeSource",
    "Memory",
    "MemorySpec",
    "ObjectMeta",
    "Resource",
    "SecretRef",
    "Size",
    "SpecModel",
    "load_knowledge_base",
    "load_memory",
    "load_resources",
    "manifest_files",
    "parse_resource",
    "resolve_secret",
    "secret_env_var",
]
