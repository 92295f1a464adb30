"""Non-Lightning subcommands of ``velvet``; each module defines ``add_parser(subparsers)``.

Modules here import nothing heavy at module level: a command's dependencies load inside its
``run`` function, so ``velvet inspect`` does not pay for Lightning or transformers.
"""
