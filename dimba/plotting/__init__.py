"""Pictures of a run: `plot_run(run_dir)` writes `training.png`; `read_run` gives its data."""

from dimba.plotting.record import PlotError, RunRecord, read_run

__all__ = ["PlotError", "RunRecord", "plot_run", "read_run"]


def __getattr__(name: str):  # matplotlib loads only when a picture is drawn
    if name == "plot_run":
        from dimba.plotting.draw import plot_run

        return plot_run
    raise AttributeError(name)
