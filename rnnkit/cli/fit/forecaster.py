"""``rnnkit fit forecaster``: time-series regression from CSV columns (MAE/RMSE vs naive)."""

from __future__ import annotations

from ._shared import config_from, interrupted, run_options, save, writer
from ._shared import fit_config as fit_config_of


def config_class():
    """The model's config class (imported when the command is built)."""
    from ...models.forecaster import ForecasterConfig

    return ForecasterConfig


def add_data_options(g) -> None:
    g.add_argument("--target", help="column to forecast (demo: SUNACTIVITY)")
    g.add_argument("--features", default="", help="comma-separated extra input columns")
    g.add_argument("--test-fraction", type=float, default=0.2, help="last share of rows held out (default: 0.2)")
    g.add_argument("--season", type=int, default=None,
                   help="period for the seasonal-naive baseline (default: none; demo: 11)")


def _forecast_report(s, prefix: str) -> None:
    print(f"{prefix}{s.count} forecasts: MAE {s.mae:.4f}  RMSE {s.rmse:.4f}   "
          f"naive (last value) MAE {s.naive_mae:.4f}  RMSE {s.naive_rmse:.4f}" +
          (f"   seasonal naive MAE {s.seasonal_mae:.4f}  RMSE {s.seasonal_rmse:.4f}"
           if s.seasonal_mae is not None else ""))
    if len(s.mae_per_step) > 1:
        print("MAE per horizon step: " + " ".join(f"{v:.3f}" for v in s.mae_per_step))


def run(args) -> int:
    from ...data.tabular import read_columns
    from ...models.forecaster import Forecaster, ForecasterConfig, sunspots_csv
    from ...models.forecaster_app import train_forecaster

    features = [c.strip() for c in args.features.split(",") if c.strip()]
    if args.predict is not None or args.eval is not None:
        model = Forecaster.load(args.predict or args.eval)
        series = read_columns(args.data, model.columns, args.delimiter)
        if args.predict is not None:
            f, close = writer(args)
            try:
                f.write(f"step,{model.target}\n")
                for h, v in enumerate(model.forecast(series), 1):
                    f.write(f"{h},{v:.6g}\n")
            finally:
                if close:
                    f.close()
            return 0
        scores = model.evaluate(series, 0, args.season or 0)
        _forecast_report(scores, f"{args.data}: ")
        return 0
    season = args.season
    if args.demo:
        path, target = sunspots_csv(), args.target or "SUNACTIVITY"
        season = 11 if season is None else season
        print(f"demo: yearly sunspot numbers 1700-2008 from statsmodels ({path})")
    else:
        if not args.target:
            raise ValueError("--target COLUMN is required with --data")
        path, target = args.data, args.target
    series = read_columns(path, [target, *features], args.delimiter)
    config, fit_config = config_from(ForecasterConfig, args), fit_config_of(args)
    n = len(series[target])
    print(f"training a forecaster on the first {1 - args.test_fraction:.0%} of {n} rows; {config}")
    model, result, first_test = train_forecaster(series, target, features, config, fit_config, args.test_fraction,
                                                 **run_options(args))
    if interrupted(args, result):
        return 130
    scores = model.evaluate(series, first_test, season or 0)
    _forecast_report(scores, "held-out (last rows): ")
    verdict = "beats" if scores.mae < scores.naive_mae else "does NOT beat"
    print(f"the model {verdict} the naive baseline (MAE {scores.mae:.4f} vs {scores.naive_mae:.4f})   "
          f"[{result.steps} steps, {result.seconds:.0f}s]")
    save(args, model)
    return 0
