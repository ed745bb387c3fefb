"""Integrations with other video frameworks: a BMF (BabitMF) module running any trtflow engine or task.

``trtflow.integrations.bmf`` holds the BMF modules (importable without BMF; the classes exist
where ``import bmf`` works); ``trtflow.integrations.batching`` holds their logic, which needs no
framework: frames are batched, run through a task and emitted in order, the partial batch at EOF.
"""
