"""Span attribute and span names, in one place.

The tracer writes these, the store reads them and the viewer shows them; keeping the
names here means the three cannot drift. ``docs/semconv.md`` documents each one.
Names follow the OpenTelemetry GenAI and container conventions where they have one and
use the ``codetape.`` namespace for the rest.
"""

from __future__ import annotations

from typing import Final

# Span names (the agent and tool names are appended after a space, as GenAI does).
SPAN_INVOKE_AGENT: Final = "invoke_agent"
SPAN_EXECUTE_CODE: Final = "execute_code"
SPAN_EXECUTE_TOOL: Final = "execute_tool"
SPAN_CHAT: Final = "chat"  # "chat {model}"

# OpenTelemetry GenAI conventions.
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_AGENT_NAME: Final = "gen_ai.agent.name"
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
GEN_AI_TOOL_CALL_ARGUMENTS: Final = "gen_ai.tool.call.arguments"  # redacted preview
GEN_AI_TOOL_CALL_RESULT: Final = "gen_ai.tool.call.result"  # redacted preview
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"

# OpenTelemetry container and error conventions.
CONTAINER_IMAGE_NAME: Final = "container.image.name"
CONTAINER_IMAGE_ID: Final = "container.image.id"
CONTAINER_IMAGE_REPO_DIGESTS: Final = "container.image.repo_digests"
ERROR_TYPE: Final = "error.type"

# codetape: runs.
RUN_TASK: Final = "codetape.run.task"
RUN_STATUS: Final = "codetape.run.status"
RUN_FINAL_ANSWER: Final = "codetape.run.final_answer"  # redacted preview
RUN_FINAL_ANSWER_DIGEST: Final = "codetape.run.final_answer.digest"
RUN_FINAL_ANSWER_TYPE: Final = "codetape.run.final_answer.type"
RUN_REPLAY_OF: Final = "codetape.replay_of"
RUN_PID: Final = "codetape.run.pid"
# A run recorded by a forked child: the run that was open in its parent at the fork.
RUN_FORKED_FROM: Final = "codetape.run.forked_from"
# A run started by a tool call of another run's step (a managed agent): that step, as
# RUN_ID:STEP_INDEX, and the tool call's span id (also a span link).
RUN_PARENT: Final = "codetape.run.parent"
RUN_PARENT_TOOL_CALL: Final = "codetape.run.parent.tool_call"
# The span that was current in the caller when the run began (also a span link).
PARENT_TRACE_ID: Final = "codetape.parent.trace_id"
PARENT_SPAN_ID: Final = "codetape.parent.span_id"

# codetape: steps (code actions).
STEP_INDEX: Final = "codetape.step.index"
STEP_STATUS: Final = "codetape.step.status"
STEP_MODE: Final = "codetape.step.mode"  # "observed" or "sandboxed"
CODE_DIGEST: Final = "codetape.code.digest"
CODE_PREVIEW: Final = "codetape.code.preview"
STDOUT_DIGEST: Final = "codetape.stdout.digest"
STDOUT_PREVIEW: Final = "codetape.stdout.preview"
STDERR_DIGEST: Final = "codetape.stderr.digest"
STDERR_PREVIEW: Final = "codetape.stderr.preview"
RESULT_PREVIEW: Final = "codetape.result.preview"
RESULT_TYPE: Final = "codetape.result.type"
ERROR_MESSAGE: Final = "codetape.error.message"
ERROR_TRACEBACK_DIGEST: Final = "codetape.error.traceback.digest"
STATE_BEFORE: Final = "codetape.state.before"  # digest of the variable manifest blob
STATE_AFTER: Final = "codetape.state.after"
STATE_VARIABLES: Final = "codetape.state.variables"  # number of variables after the step
# The model call whose output the step's code came from (its span id), and the text the
# model wrote around the code block.
STEP_LLM_CALL: Final = "codetape.step.llm_call"
STEP_THOUGHT_PREVIEW: Final = "codetape.step.thought.preview"
STEP_THOUGHT_DIGEST: Final = "codetape.step.thought.digest"
# The text of the step's code line that raised (failure grouping).
ERROR_LINE: Final = "codetape.error.line"

# codetape: sandbox identity.
SANDBOX_BACKEND: Final = "codetape.sandbox.backend"
SANDBOX_LAYERS_DIGEST: Final = "codetape.sandbox.layers_digest"
SANDBOX_PYTHON: Final = "codetape.sandbox.python"
SANDBOX_PLATFORM: Final = "codetape.sandbox.platform"
SANDBOX_ENV_FINGERPRINT: Final = "codetape.sandbox.env_fingerprint"
SANDBOX_LIMITS: Final = "codetape.sandbox.limits"  # JSON text
SANDBOX_HASH_SEED: Final = "codetape.sandbox.hash_seed"  # PYTHONHASHSEED inside
STEP_RANDOM_SEED: Final = "codetape.step.random_seed"  # random.seed() before the step
# Observed steps: the blob of random.getstate() before the step, restored by a replay.
STEP_RANDOM_STATE: Final = "codetape.step.random_state"
# Observed steps: how the code was executed, as JSON, so a replay runs it the same way.
STEP_EXECUTOR: Final = "codetape.step.executor"

# codetape: tool calls.
TOOL_ARGUMENTS_DIGEST: Final = "codetape.tool.arguments.digest"
TOOL_RESULT_DIGEST: Final = "codetape.tool.result.digest"
# The tool's parameters as JSON [[name, kind], ...]: a replay binds arguments alike.
TOOL_PARAMETERS: Final = "codetape.tool.parameters"
# Observed steps: the tool's answer pickled, so a replay returns exactly what it returned.
TOOL_RESULT_PICKLE: Final = "codetape.tool.result.pickle.digest"
TOOL_STATUS: Final = "codetape.tool.status"
# The run a tool call started (a managed agent's run), by id.
TOOL_CHILD_RUN: Final = "codetape.tool.child_run"

# codetape: model calls (chat spans).
LLM_INDEX: Final = "codetape.llm.index"  # order of the call in its run
LLM_INPUT_DIGEST: Final = "codetape.llm.input.digest"  # redacted JSON messages
LLM_INPUT_PREVIEW: Final = "codetape.llm.input.preview"  # the last input message
LLM_INPUT_MESSAGES: Final = "codetape.llm.input.messages"  # number of input messages
LLM_OUTPUT_DIGEST: Final = "codetape.llm.output.digest"  # redacted output text
LLM_OUTPUT_PREVIEW: Final = "codetape.llm.output.preview"
LLM_COST: Final = "codetape.llm.cost"  # in the currency of configure(prices=...)
LLM_STREAMED: Final = "codetape.llm.streamed"

# Any span: the blob of {attribute: full value} of its string attributes recorded cut.
ATTRIBUTES_FULL_DIGEST: Final = "codetape.attributes.full.digest"

# Exported spans only (``configure(otlp_conventions=...)``, docs/otlp.md): what
# GenAI-aware backends read as a span's input and output. The store never holds these.
# OpenTelemetry GenAI conventions.
GEN_AI_TOOL_TYPE: Final = "gen_ai.tool.type"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"  # JSON [{"role", "parts"}]
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"  # JSON, with "finish_reason"
# OpenInference conventions (Arize Phoenix, Arize).
OI_SPAN_KIND: Final = "openinference.span.kind"
OI_INPUT_VALUE: Final = "input.value"
OI_INPUT_MIME_TYPE: Final = "input.mime_type"
OI_OUTPUT_VALUE: Final = "output.value"
OI_OUTPUT_MIME_TYPE: Final = "output.mime_type"
OI_AGENT_NAME: Final = "agent.name"
OI_TOOL_NAME: Final = "tool.name"
OI_LLM_MODEL_NAME: Final = "llm.model_name"
OI_LLM_PROVIDER: Final = "llm.provider"
OI_LLM_TOKEN_COUNT_PROMPT: Final = "llm.token_count.prompt"
OI_LLM_TOKEN_COUNT_COMPLETION: Final = "llm.token_count.completion"
OI_LLM_TOKEN_COUNT_TOTAL: Final = "llm.token_count.total"
# Flattened messages: llm.input_messages.{i}.message.role, ...message.content.
OI_LLM_INPUT_MESSAGES: Final = "llm.input_messages"
OI_LLM_OUTPUT_MESSAGES: Final = "llm.output_messages"
OI_MESSAGE_ROLE: Final = "message.role"
OI_MESSAGE_CONTENT: Final = "message.content"

# Values of gen_ai.operation.name.
OP_INVOKE_AGENT: Final = "invoke_agent"
OP_EXECUTE_CODE: Final = "execute_code"
OP_EXECUTE_TOOL: Final = "execute_tool"
OP_CHAT: Final = "chat"

# Exported spans: a code action is a call of this code-interpreter tool.
CODE_TOOL_NAME: Final = "code_interpreter"
# Values of gen_ai.tool.type: a code action runs on the agent's side (an extension, as
# a code interpreter is); a tool called from its code is a function.
TOOL_TYPE_EXTENSION: Final = "extension"
TOOL_TYPE_FUNCTION: Final = "function"
# Values of openinference.span.kind and of the MIME types.
OI_KIND_AGENT: Final = "AGENT"
OI_KIND_TOOL: Final = "TOOL"
OI_KIND_LLM: Final = "LLM"
MIME_TEXT: Final = "text/plain"
MIME_JSON: Final = "application/json"
