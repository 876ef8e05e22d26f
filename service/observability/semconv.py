"""The names spans are written with: the OpenTelemetry GenAI semantic conventions, and ours.

One place to change when the conventions (still at development status) move on.
"""

from __future__ import annotations

# The GenAI semantic conventions followed here: those of OpenTelemetry
# semantic-conventions v1.41.0, the last release before they moved to their own
# repository (open-telemetry/semantic-conventions-genai). They are at
# "development" status: change this one constant (and the names below, where a
# release renamed one) to follow another version. It is the tracer's schema URL.
SEMCONV_VERSION = "1.41.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

# --- attribute names --------------------------------------------------------------
GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_PROVIDER = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_WORKFLOW_NAME = "gen_ai.workflow.name"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
# HTTP semconv: the ordinal of a resent request (1 = the first retry).
RESEND_COUNT = "http.request.resend_count"
# Operation names (gen_ai.operation.name).
OP_CHAT = "chat"
OP_TEXT_COMPLETION = "text_completion"
OP_WORKFLOW = "invoke_workflow"
# Ours, for what the conventions have no name for.
MODE = "divconq.mode"
SUBQUESTIONS = "divconq.subquestions"
CACHE = "divconq.cache"
CACHE_KIND = "divconq.cache.kind"
CACHE_OUTCOME = "divconq.cache.outcome"
STAGE = "divconq.stage"
ADAPTER = "divconq.decomposer.adapter"
PROFILE = "divconq.solver.profile"
FALLBACK = "divconq.solver.fallback"
USAGE_ESTIMATED = "divconq.usage.estimated"
REQUEST_ID = "divconq.request_id"

# gen_ai.provider.name for each solver backend (others report their own name).
PROVIDERS = {
    "openai": "openai",
    "azure_openai": "azure.ai.openai",
    "anthropic": "anthropic",
    "embedded": "vllm",
}
# Solver backends that run in this process: their calls are INTERNAL spans, not CLIENT.
IN_PROCESS = frozenset({"embedded"})

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
