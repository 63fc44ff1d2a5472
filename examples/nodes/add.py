from flowkit.log import Logger
from flowkit.node import Node

node = Node()
logger = Logger(node)


async def main():
    inputs = node.get_inputs()
    await logger.info(f"adding {inputs['a']} and {inputs['b']}")
    return [], {"out": inputs["a"] + inputs["b"]}, "run successfully"


node.register_main(main)
node.run()
