"""Issue 19.5: structured logs carry the shard / job ids of the asyncio task that logged."""
from __future__ import annotations

import asyncio
import io
import json
import logging

from shoal.node.__main__ import _JsonFormatter, _TextFormatter
from shoal.node.log_labels import LabelFilter, labelled


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(LabelFilter())
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.labels.{id(stream)}")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_labels_follow_the_task_and_its_children() -> None:
    logger, stream = capture(_JsonFormatter("n7"))

    async def child() -> None:
        logger.info("child line")

    async def shard_loop() -> None:
        logger.warning("copy %d of %d", 1, 2)
        await asyncio.get_running_loop().create_task(child())

    async def main() -> None:
        logger.info("outside")
        await asyncio.get_running_loop().create_task(shard_loop(), context=labelled(shard="events/3"))
        await asyncio.get_running_loop().create_task(child(), context=labelled(job="j1", task=2, attempt=1))
        logger.info("outside again")

    asyncio.run(main())
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["msg"], line.get("shard"), line.get("job")) for line in lines] == [
        ("outside", None, None), ("copy 1 of 2", "events/3", None), ("child line", "events/3", None),
        ("child line", None, "j1"), ("outside again", None, None)]
    assert lines[3]["task"] == 2 and lines[3]["attempt"] == 1 and lines[0]["node"] == "n7"


def test_text_lines_show_labels_and_json_keeps_tracebacks() -> None:
    logger, stream = capture(_TextFormatter("%(levelname)s n1 %(name)s%(labels)s: %(message)s"))

    async def main() -> None:
        logger.info("plain")
        await asyncio.get_running_loop().create_task(asyncio.to_thread(int), context=labelled(shard="a/0"))
        async def labelled_line() -> None:
            logger.info("labelled")
        await asyncio.get_running_loop().create_task(labelled_line(), context=labelled(shard="a/0"))

    asyncio.run(main())
    assert stream.getvalue().splitlines() == [f"INFO n1 {logger.name}: plain",
                                              f"INFO n1 {logger.name} [shard=a/0]: labelled"]
    json_logger, json_stream = capture(_JsonFormatter("n1"))
    try:
        raise ValueError("boom")
    except ValueError:
        json_logger.exception("failed")
    line = json.loads(json_stream.getvalue())
    assert line["msg"] == "failed" and "ValueError: boom" in line["exc"]
