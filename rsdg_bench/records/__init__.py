"""The stage of records: the result-record schema, its one constructor, the results folder (atomic, confined,
resumable), records as a DataFrame, and how a record's weights were trained.
"""
