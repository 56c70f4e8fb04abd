"""Drives hako's MCP server with the official MCP Python SDK client.

usage: client.py stdio HAKO_BINARY WORKDIR
       client.py http URL KEY
Prints "MCP OK" when every check passed; raises otherwise.
"""
import asyncio
import base64
import sys

from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def as_json(result):
    return result.model_dump(by_alias=True, mode="json", exclude_none=True)


def texts(result):
    return "\n".join(c["text"] for c in result["content"] if c["type"] == "text")


async def check(client):
    tools = await client.list_tools()
    names = sorted(t.name for t in tools.tools)
    assert names == sorted(["run_code", "session_create", "session_exec", "session_upload",
                            "session_download", "session_close"]), names
    schema = next(t for t in tools.tools if t.name == "run_code").input_schema
    assert schema["required"] == ["language", "code"], schema

    run = as_json(await client.call_tool("run_code", {"language": "python3", "code": "print(6 * 7)"}))
    assert not run.get("isError") and texts(run).strip() == "42", run
    failed = as_json(await client.call_tool("run_code", {"language": "python3", "code": "raise SystemExit(3)"}))
    assert failed.get("isError") and "exited with code 3" in texts(failed), failed

    created = as_json(await client.call_tool("session_create", {"language": "python3"}))
    assert not created.get("isError"), created
    import json
    session_id = json.loads(texts(created))["session_id"]
    up = as_json(await client.call_tool("session_upload", {
        "session_id": session_id, "path": "data/in.csv",
        "content_base64": base64.b64encode(b"a,b\n1,2\n3,4\n").decode()}))
    assert not up.get("isError"), up
    step = as_json(await client.call_tool("session_exec", {
        "session_id": session_id,
        "code": "import csv\nrows = list(csv.DictReader(open('data/in.csv')))\ntotal = sum(int(r['b']) for r in rows)\nopen('out.txt', 'w').write(f'total={total}')\ntotal"}))
    assert not step.get("isError") and "6" in texts(step), step
    again = as_json(await client.call_tool("session_exec", {"session_id": session_id, "code": "total * 2"}))
    assert "12" in texts(again), again
    down = as_json(await client.call_tool("session_download", {"session_id": session_id, "path": "out.txt"}))
    blobs = [c["resource"]["blob"] for c in down["content"] if c["type"] == "resource"]
    assert blobs and base64.b64decode(blobs[0]) == b"total=6", down
    closed = as_json(await client.call_tool("session_close", {"session_id": session_id}))
    assert not closed.get("isError"), closed
    gone = as_json(await client.call_tool("session_exec", {"session_id": session_id, "code": "1"}))
    assert gone.get("isError") and "not found" in texts(gone), gone


async def main():
    mode = sys.argv[1]
    if mode == "stdio":
        params = StdioServerParameters(command=sys.argv[2], args=["mcp"], cwd=sys.argv[3])
        target = params
    else:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {sys.argv[3]}"})
        target = streamable_http_client(sys.argv[2], http_client=http)
    async with Client(target) as client:
        await check(client)
    print("MCP OK")


asyncio.run(main())
