"""The search attributes the worker registers at start (remediator.app.runtime
``ensure_search_attributes``, called by ``Engine.start``), against a fresh Temporal dev server
that has none of them, as a new namespace of a real cluster has none."""

from __future__ import annotations

import uuid

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from remediator.app.runtime import StartupError, ensure_search_attributes
from remediator.app.temporal import temporal_cli_path
from remediator.domain.messages import RemediationInput
from remediator.domain.playbook import PlaybookRef
from remediator.domain.runs import SA_OUTCOME, SA_PLAYBOOK, SA_TARGET, SEARCH_ATTRIBUTES
from tests.support import CHECKOUT, playbook, until

NAMES = sorted(k.name for k in SEARCH_ATTRIBUTES)


async def custom_attributes(client) -> dict[str, int]:
    listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=client.namespace))
    return dict(listed.custom_attributes)


async def start_as_the_intake_does(client, queue: str):
    """A RemediationWorkflow start with the search attributes the intake sets (no worker needed)."""
    pb = playbook([{"name": "restart", "rollout_restart": {}}])
    return await client.start_workflow(
        "RemediationWorkflow",
        RemediationInput(target=CHECKOUT, playbook=pb, playbook_ref=PlaybookRef(name=pb.name, path="p.yaml", sha256="ab" * 32)),
        id=f"remediation/{CHECKOUT.key}-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
        search_attributes=TypedSearchAttributes([
            SearchAttributePair(SA_TARGET, CHECKOUT.key),
            SearchAttributePair(SA_PLAYBOOK, pb.name),
            SearchAttributePair(SA_OUTCOME, "running"),
        ]),
    )


async def test_worker_start_registers_the_search_attributes_a_fresh_server_lacks():
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(), data_converter=pydantic_data_converter, dev_server_log_level="error",
    )
    try:
        client = env.client
        queue = f"sa-{uuid.uuid4()}"
        assert not set(NAMES) & set(await custom_attributes(client))
        with pytest.raises(RPCError, match="has no mapping defined for search attribute (Target|Playbook|Outcome)$"):
            await start_as_the_intake_does(client, queue)

        await ensure_search_attributes(client)
        registered = await custom_attributes(client)
        assert {name: registered.get(name) for name in NAMES} == {
            name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in NAMES
        }
        await ensure_search_attributes(client)  # a second worker start: nothing to add, no error
        assert await custom_attributes(client) == registered

        handle = await start_as_the_intake_does(client, queue)

        async def found() -> list[str]:
            return [wf.id async for wf in client.list_workflows(f'Target = "{CHECKOUT.key}" AND Outcome = "running"')]

        assert await until(found, "the run to be found by its search attributes") == [handle.id]
        await handle.terminate("test done")
    finally:
        await env.shutdown()


async def test_a_server_that_refuses_to_add_them_gets_a_refusal_naming_them_and_the_commands():
    """Temporal Cloud refuses the operator API's AddSearchAttributes (PERMISSION_DENIED): the
    start is refused, naming the missing attributes and the commands that add them. The
    refusal is the server's answer as Cloud gives it, injected on the one call."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(), data_converter=pydantic_data_converter, dev_server_log_level="error",
    )
    try:
        client = env.client

        async def denied(*args, **kwargs):
            raise RPCError("Request unauthorized.", RPCStatusCode.PERMISSION_DENIED, b"")

        client.operator_service.add_search_attributes = denied  # type: ignore[method-assign]
        with pytest.raises(StartupError) as refused:
            await ensure_search_attributes(client)
        names = ", ".join(NAMES)
        create = " && ".join(
            f"temporal operator search-attribute create --namespace default --name {n} --type Keyword" for n in NAMES
        )
        cloud = " ".join(f"--sa '{n}=Keyword'" for n in NAMES)
        assert str(refused.value) == (
            f"refusing to start: the search attributes {names} are missing on Temporal namespace default and this "
            "client may not add them (Request unauthorized.). Add them once, then start again:\n"
            f"  self-hosted:     {create}\n"
            f"  Temporal Cloud:  tcld namespace search-attributes add --namespace default {cloud}"
        )
        assert not set(NAMES) & set(await custom_attributes(client))
    finally:
        await env.shutdown()
