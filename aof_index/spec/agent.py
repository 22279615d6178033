"""``Agent``, ``AgentFleet`` and ``AgentFlow``: their memory and context sections.

Only the sections this package serves are modelled (``spec/agents.md``): an agent's
``memory`` and ``context``, a fleet's ``sharedMemory`` and member template, a flow's
``memory`` and its steps' ``context``. Every other field (provider, model, systemPrompt,
replicas, tools...) belongs to the agent runtime and passes through untouched: it is kept
as given and dumped back unchanged. The agent sections have no defaults of their own (a
field left out inherits from the referenced Memory), except ``rag.fusion.k`` (60).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from aof_index.spec.base import PassthroughModel, Resource, SpecModel, spec_error
from aof_index.spec.memory import (
    Compression,
    MemorySpec,
    SummarizationStrategy,
)
from aof_index.spec.types import Duration

__all__ = [
    "AdaptiveRetrieval",
    "Agent",
    "AgentContext",
    "AgentConversational",
    "AgentFleet",
    "AgentFleetSpec",
    "AgentFlow",
    "AgentFlowSpec",
    "AgentMemory",
    "AgentRag",
    "AgentSpec",
    "AgentSummarization",
    "ConfigMapRef",
    "ContextOptimization",
    "DynamicContext",
    "DynamicSource",
    "FleetTemplate",
    "FlowStep",
    "FlowStepOutput",
    "Fusion",
    "HybridWeights",
    "MultiQuery",
    "QueryEnhancement",
    "RagContext",
    "RagRerank",
    "RagRetrieval",
    "StaticContext",
    "StaticSource",
]


# --- spec.memory ------------------------------------------------------------------------


class AgentSummarization(SpecModel):
    """``memory.conversational.summarization``: rolling summary every ``triggerThreshold``
    messages, keeping the last ``preserveRecent`` verbatim."""

    enabled: bool | None = None
    trigger_threshold: PositiveInt | None = None
    model: str | None = None
    strategy: SummarizationStrategy | None = None
    preserve_recent: NonNegativeInt | None = None


class AgentConversational(SpecModel):
    """``memory.conversational``: the agent's view of the conversation history."""

    enabled: bool | None = None
    max_messages: NonNegativeInt | None = None
    include_system_prompts: bool | None = None
    ttl: Duration | None = None
    scope: Literal["flow"] | None = None
    shared: bool | None = None
    summarization: AgentSummarization | None = None
    compression: Compression | None = None


class HybridWeights(SpecModel):
    """``rag.retrieval.hybridWeights``: fusion weights."""

    semantic: float | None = Field(default=None, ge=0.0)
    keyword: float | None = Field(default=None, ge=0.0)


class RagRerank(SpecModel):
    """``rag.retrieval.rerank`` (e.g. ``model: cohere-rerank-v3``)."""

    enabled: bool | None = None
    model: str | None = None
    top_k: PositiveInt | None = None


class ContextOptimization(SpecModel):
    """``rag.retrieval.contextOptimization``: fit the context into ``maxTokens``."""

    enabled: bool | None = None
    max_tokens: PositiveInt | None = None
    strategy: Literal["truncate", "summarize", "prioritize"] | None = None


class RagRetrieval(SpecModel):
    """``rag.retrieval``: first-stage retrieval."""

    strategy: Literal["hybrid", "semantic", "keyword"] | None = None
    hybrid_weights: HybridWeights | None = None
    top_k: PositiveInt | None = None
    threshold: float | None = None
    rerank: RagRerank | None = None
    filter: dict[str, Any] | None = None
    context_optimization: ContextOptimization | None = None


class QueryEnhancement(SpecModel):
    """``rag.queryEnhancement``."""

    enabled: bool | None = None
    methods: (
        list[Literal["hypotheticalDocument", "queryDecomposition", "queryExpansion"]] | None
    ) = None


class MultiQuery(SpecModel):
    """``rag.multiQuery``: retrieve for several rewrites of the question."""

    enabled: bool | None = None
    queries: PositiveInt | None = None
    aggregation: Literal["reciprocalRankFusion"] | None = None


class Fusion(SpecModel):
    """``rag.fusion``: how result lists are merged."""

    strategy: Literal["reciprocalRankFusion", "rrf", "linear", "maximal"] | None = None
    k: NonNegativeInt = 60


class AdaptiveRetrieval(SpecModel):
    """``rag.adaptive``: choose top-k per query from retrieval confidence."""

    enabled: bool | None = None
    min_top_k: PositiveInt | None = None
    max_top_k: PositiveInt | None = None
    strategy: Literal["confidenceBased"] | None = None

    @model_validator(mode="after")
    def _min_below_max(self) -> AdaptiveRetrieval:
        if (
            self.min_top_k is not None
            and self.max_top_k is not None
            and self.min_top_k > self.max_top_k
        ):
            raise spec_error(
                "minTopK",
                f"minTopK ({self.min_top_k}) must not exceed maxTopK ({self.max_top_k})",
            )
        return self


class AgentRag(SpecModel):
    """``memory.rag``: knowledge retrieved for each user message."""

    enabled: bool | None = None
    top_k: PositiveInt | None = None
    threshold: float | None = None
    rerank: bool | None = None
    include_metadata: bool | None = None
    context_window: PositiveInt | None = None
    inherit_from_fleet: bool | None = None
    retrieval: RagRetrieval | None = None
    query_enhancement: QueryEnhancement | None = None
    multi_query: MultiQuery | None = None
    fusion: Fusion | None = None
    adaptive: AdaptiveRetrieval | None = None


class AgentMemory(SpecModel):
    """An agent's ``memory`` (also a fleet's ``sharedMemory`` and a flow's ``memory``):
    a Memory by ``ref`` or ``inline``, and how this agent uses it."""

    ref: str | None = None
    inline: MemorySpec | None = None
    conversational: AgentConversational | None = None
    rag: AgentRag | None = None

    @model_validator(mode="after")
    def _ref_or_inline(self) -> AgentMemory:
        if self.ref is not None and self.inline is not None:
            raise spec_error(
                "inline",
                "`ref` and `inline` are mutually exclusive: name a Memory resource with "
                "`ref`, or give a whole Memory spec with `inline`, not both",
            )
        return self


# --- spec.context -----------------------------------------------------------------------


class ConfigMapRef(SpecModel):
    """A ConfigMap (and optionally one key of it)."""

    name: str
    key: str | None = None


class StaticSource(SpecModel):
    """``context.static[].source``: ``inline`` text or a ``configMapRef``."""

    inline: str | None = None
    config_map_ref: ConfigMapRef | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StaticSource:
        if (self.inline is None) == (self.config_map_ref is None):
            raise spec_error(
                "inline",
                "give exactly one of `inline` (text) and `configMapRef` {name, key}",
            )
        return self


class StaticContext(SpecModel):
    """One entry of ``context.static``: always included."""

    name: str | None = None
    source: StaticSource


_REQUIRED_FOR_DYNAMIC = {"HTTP": "url", "K8sAPI": "resource", "FlowContext": "path"}


class DynamicSource(SpecModel):
    """``context.dynamic[].source``: fetched at run time.

    ``HTTP`` uses ``url``, ``method``, ``headers`` (which may hold ``{{.secrets.NAME}}``) and
    ``jsonPath``; ``K8sAPI`` uses ``resource``, ``namespace`` and ``labelSelector``;
    ``FlowContext`` uses ``path``.
    """

    type: Literal["HTTP", "K8sAPI", "FlowContext"]
    url: str | None = None
    method: str | None = None
    headers: dict[str, str] | None = None
    json_path: str | None = None
    resource: str | None = None
    namespace: str | None = None
    label_selector: str | None = None
    path: str | None = None

    @model_validator(mode="after")
    def _required_for_type(self) -> DynamicSource:
        field = _REQUIRED_FOR_DYNAMIC[self.type]
        if getattr(self, field) is None:
            raise spec_error(field, f"a {self.type} source needs `{field}`")
        return self


class DynamicContext(SpecModel):
    """One entry of ``context.dynamic``: fetched and cached for ``refresh``."""

    name: str | None = None
    source: DynamicSource
    refresh: Duration | None = None


class RagContext(SpecModel):
    """One entry of ``context.rag``: retrieval from a Memory. ``query`` and filter values
    are templates over ``{{.userMessage}}``, ``{{.input.X}}``, ``{{.flowContext.X.Y}}``."""

    name: str | None = None
    memory_ref: str | None = None
    query: str | None = None
    top_k: PositiveInt | None = None
    filter: dict[str, Any] | None = None


class AgentContext(SpecModel):
    """An agent's (or a flow step's) ``context``."""

    static: list[StaticContext] | None = None
    dynamic: list[DynamicContext] | None = None
    rag: list[RagContext] | None = None
    inherit: bool | None = None


# --- the resources ----------------------------------------------------------------------


class AgentSpec(PassthroughModel):
    """``spec`` of an Agent: ``memory`` and ``context`` are checked, the rest passes through."""

    memory: AgentMemory | None = None
    context: AgentContext | None = None


class Agent(Resource):
    """An ``Agent`` resource (only its memory and context sections are modelled)."""

    kind: Literal["Agent"] = "Agent"
    spec: AgentSpec = Field(default_factory=AgentSpec)
    status: dict[str, Any] | None = None


class FleetTemplate(PassthroughModel):
    """``spec.template`` of a fleet: each member's own agent spec."""

    spec: AgentSpec | None = None


class AgentFleetSpec(PassthroughModel):
    """``spec`` of an AgentFleet: ``sharedMemory`` is seen by every member."""

    shared_memory: AgentMemory | None = None
    template: FleetTemplate | None = None


class AgentFleet(Resource):
    """An ``AgentFleet`` resource (only its memory sections are modelled)."""

    kind: Literal["AgentFleet"] = "AgentFleet"
    spec: AgentFleetSpec = Field(default_factory=AgentFleetSpec)
    status: dict[str, Any] | None = None


class FlowStepOutput(PassthroughModel):
    """``steps[].output``: ``to: flowContext.<key>`` stores the step's output there."""

    to: str | None = None


class FlowStep(PassthroughModel):
    """One entry of ``spec.steps`` of a flow. ``agentRef`` and ``dependsOn`` belong to the
    flow runtime and are kept as given (a name or a list of names)."""

    name: str | None = None
    agent_ref: Any = None
    depends_on: Any = None
    context: AgentContext | None = None
    output: FlowStepOutput | None = None


class AgentFlowSpec(PassthroughModel):
    """``spec`` of an AgentFlow: ``memory`` is shared by the steps of one run."""

    memory: AgentMemory | None = None
    steps: list[FlowStep] | None = None


class AgentFlow(Resource):
    """An ``AgentFlow`` resource (only its memory and context sections are modelled)."""

    kind: Literal["AgentFlow"] = "AgentFlow"
    spec: AgentFlowSpec = Field(default_factory=AgentFlowSpec)
    status: dict[str, Any] | None = None
