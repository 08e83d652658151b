"""An MCP server made with the official `mcp` package, for the agent in mcp_agent.py.

    python mcp_server.py stdio          # on standard input and output
    python mcp_server.py http PORT      # streamable HTTP on 127.0.0.1:PORT/mcp

One tool, `lookup`, with the arguments the mock model passes (tests/src/mock.rs
`tool_arguments`): its answer is computed from them, so the test can check what came back.
"""

import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("weather")


@server.tool()
def lookup(query: str, limit: int, units: str) -> str:
    """Look something up."""
    return "found %d results for %s in %s" % (limit, query, units)


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
