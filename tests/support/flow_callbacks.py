"""on_complete callbacks the workflow tests name (imported by the worker)."""


def add_report_step(result, step, flow):
    total = result["rows"][0][0]
    return {"report": {"needs": [step],
                       "query": "SELECT {{ count_orders.rows[0][0] }} * 2 AS doubled",
                       "priority": "high"},
            "echo": {"query": f"SELECT {total} AS seen"}}


def bad_steps(result, step, flow):
    return {"broken": {"needs": ["no_such_step"], "query": "SELECT 1"}}
