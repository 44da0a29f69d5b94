"""The stage of the Hugging Face Hub: prepared datasets as Hub dataset repos and back, result records exported as
a Hub dataset.
"""
