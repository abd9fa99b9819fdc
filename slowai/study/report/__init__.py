"""The answer as a researcher reads it: report.md, results files, tables, plots and one W&B summary run. Pure
functions of a `StudyResult`."""

from slowai.study.report.files import log_wandb, verdicts, write_rows
from slowai.study.report.markdown import markdown_table, model_summaries, text_table, write_report

__all__ = ["log_wandb", "markdown_table", "model_summaries", "text_table", "verdicts", "write_report", "write_rows"]
