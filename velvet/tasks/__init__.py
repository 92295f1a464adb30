"""Lightning tasks (the only package besides the DataModule and the CLI that imports Lightning).

Recipes name them by ``class_path``: ``velvet.tasks.pretrain.PretrainTask``.
"""
