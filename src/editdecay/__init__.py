"""editdecay: do knowledge edits survive fine-tuning?"""

__version__ = "0.6.0"
