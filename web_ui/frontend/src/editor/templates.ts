// The palette: node templates with the SDK skeleton filled in (see DESIGN.md, "The
// node SDK"). A node returns (next_nodes, outputs, status_message).

import type { Limits, Port } from "../document";

export interface NodeTemplate {
  key: string;
  title: string;
  description: string;
  label: string;
  inputs: Port[];
  outputs: string[];
  limits: Limits;
  code: string;
}

function skeleton(preamble: string, body: string): string {
  return `from flowkit.log import Logger
from flowkit.node import Node

node = Node()
logger = Logger(node)
${preamble}

async def main():
${body}


node.register_main(main)
node.run()
`;
}

const port = (name: string, list = false): Port => ({ name, list });

export const TEMPLATES: readonly NodeTemplate[] = [
  {
    key: "python",
    title: "Python node",
    description: "A blank node: inputs in, outputs out",
    label: "Python",
    inputs: [port("in")],
    outputs: ["out"],
    limits: {},
    code: skeleton(
      "",
      `    inputs = node.get_inputs()
    await logger.info("running")
    return [], {"out": inputs.get("in")}, "done"`,
    ),
  },
  {
    key: "http_fetch",
    title: "HTTP fetch",
    description: "GET a URL (network access on)",
    label: "HTTP fetch",
    inputs: [port("url")],
    outputs: ["status", "body"],
    limits: { network: true, timeout_s: 30 },
    code: skeleton(
      "import urllib.request\n",
      `    url = node.get_inputs().get("url") or "https://example.com"
    await logger.info(f"fetching {url}")
    with urllib.request.urlopen(url, timeout=20) as response:
        body = response.read().decode("utf-8", "replace")
        return [], {"status": response.status, "body": body}, f"HTTP {response.status}"`,
    ),
  },
  {
    key: "transform",
    title: "Transform",
    description: "Reshape the data flowing through",
    label: "Transform",
    inputs: [port("in")],
    outputs: ["out"],
    limits: {},
    code: skeleton(
      "",
      `    value = node.get_inputs().get("in")
    result = value  # reshape value here
    return [], {"out": result}, "transformed"`,
    ),
  },
  {
    key: "branch",
    title: "Branch",
    description: "Choose which successors run (next_nodes)",
    label: "Branch",
    inputs: [port("in")],
    outputs: ["out"],
    limits: {},
    code: skeleton(
      "",
      `    value = node.get_inputs().get("in")
    # next_nodes: ids of direct successors to activate; [] activates all of them.
    next_nodes = []
    await logger.info(f"routing to {next_nodes or 'every successor'}")
    return next_nodes, {"out": value}, "routed"`,
    ),
  },
  {
    key: "merge",
    title: "Merge",
    description: "Collect several upstream values (list port)",
    label: "Merge",
    inputs: [port("items", true)],
    outputs: ["merged"],
    limits: {},
    code: skeleton(
      "",
      `    items = node.get_inputs().get("items") or []
    return [], {"merged": items}, f"merged {len(items)} values"`,
    ),
  },
  {
    key: "secret",
    title: "Uses a secret",
    description: "Reads API_KEY from the vault",
    label: "With secret",
    inputs: [port("in")],
    outputs: ["out"],
    limits: { network: true },
    code: skeleton(
      '# Resolved inside the NPU only; outputs and logs show it as ***.\napi_key = "<<<secret::API_KEY>>>"\n',
      `    value = node.get_inputs().get("in")
    await logger.info("calling the API")
    return [], {"out": value}, "called"`,
    ),
  },
];

export function templateByKey(key: string): NodeTemplate | undefined {
  return TEMPLATES.find((template) => template.key === key);
}
