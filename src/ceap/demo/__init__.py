"""The demo: seeded data, a trained churn model and the batch programs that use them.

``ceap demo`` calls :func:`ceap.demo.runner.run_demo`; the data generator and the
model trainer are importable on their own for tests and notebooks.
"""
