import functools
import os
import pathlib

import keras
import numpy as np

import keras_seq._atomic as _atomic
import keras_seq._multiworker as _multiworker
import keras_seq._validation as validation
import keras_seq.diagnostics as diagnostics
import keras_seq.monitoring as monitoring
from keras_seq.callbacks import figures, journal, notices, records, summaries

_ON_NAN = ("stop", "skip", "warn")
_TIMESTEP_COLUMNS = records.TIMESTEP_COLUMNS
_ON_EXPLODE = ("warn", "stop")
_NAME = "gradient_monitor"  # its state's key in a backup


class GradientMonitor(keras.callbacks.Callback):
    """Records gradient norms per layer and per *time step* during `fit`.

    Works on any Keras model that trains with Keras's own `train_step`: a
    `keras.Sequential`, a functional or subclassed `keras.Model`, or their
    keras_seq counterparts, as they are (nothing to rebuild). When training
    begins it installs monitored training functions, built with Keras's own
    `make_train_function` (see `keras_seq.monitoring.MonitoredTraining`),
    and gives Keras's function back when training ends. On every `every`-th
    training step they compute, in the graph and from exactly the gradient
    the optimizer applies:

    - the global gradient norm (before and after the optimizer's clipping),
      the norm of every layer and every variable, and whether all are finite;
    - for every recurrent sublayer of every `keras_seq.layers.SharedRNN`
      (each depth level, each direction of a `Bidirectional`): the norm of
      the total gradient dL/dh_t at every time step, carried back through
      the recurrence, and each step's contribution to the recurrent-kernel
      gradient (projected on the applied gradient's direction, so the
      contributions of all steps add up to its norm).

    The same per-step data comes from Keras's own `SimpleRNN`, `GRU` and
    `LSTM` (dL/dc_t too), alone, stacked or `Bidirectional`; other layers
    get per-layer norms. Steps that do not record run Keras's own step (plus
    an all-finite guard when `on_nan` is `"stop"` or `"skip"`).

    Runs on Keras's TensorFlow and JAX backends, with the same numbers and
    files (on JAX without TensorFlow installed: the step is Keras's
    functional JAX step, see `keras_seq.monitoring.train_step_jax`).

    TensorBoard tags (under `<log_dir>/gradients`, a run of its own next to
    `keras.callbacks.TensorBoard`'s `train` and `validation`):

    - scalars, at each recorded step: `gradients/global_norm`,
      `gradients/applied_norm`, `gradients/loss`, `gradients/skipped_steps`
      (and `gradients/loss_scale_skips` under a `LossScaleOptimizer`),
      `gradients/norm/<layer>`, `gradients/horizon/<sublayer>`,
      `gradients/decay/<sublayer>`, and `gradients/depth_ratio/<level>` (a
      level's gradient norm over the top level's, for two or more recurrent
      levels in one stack);
    - a custom-scalars layout putting all `gradients/norm/*` in one chart;
    - histograms (with `histograms=True`): `gradients/values/<variable path>`;
    - images, at each epoch end (see `plot`): `gradients/heatmap/<sublayer>`,
      log10 ||dL/dh_t|| with time step across and training step down, axes
      and a colour bar; `gradients/decay`, ||dL/dh_t|| against steps back,
      one line per sublayer;
    - text, at each epoch end: `gradients/diagnosis`, the `report()` table.

    Sublayers are named `<layer name>/level_<i>`.

    Crashes and restarts (with a `log_dir`): use
    `keras_seq.callbacks.BackupAndRestore`. Before each of its backups the
    monitor commits its journal (`fsync`) and hands over its step count,
    skip counts and last record, which the backup keeps with the weights;
    the resumed monitor numbers steps from there (with Keras's
    `keras.callbacks.BackupAndRestore` it maps the optimizer's restored
    step count back to training steps through the journal). The journal,
    under `<log_dir>/gradients/state/` (see `keras_seq.callbacks.journal`),
    holds each recorded step's frame row, variable norms and per-time-step
    rows, each non-finite step, and each fit's first step, appended and
    flushed as each step is recorded, after that step's TensorBoard
    scalars. A new monitor given a `log_dir` that holds a journal (the same
    command started again) continues it: its frames begin with what the
    earlier run recorded before the step the restored backup stands for,
    the steps run again after that appear once (the new run's), and a
    `SessionLog.START` event at that step makes TensorBoard drop the
    earlier run's points from there on. A record the backup stood for but
    the journal lacks (damaged after the backup) is named in `lost_steps`,
    the report and TensorBoard. One `log_dir` holds one training run: a
    fresh model in it (step 0), another model, or a journal spanning
    several models starts the frames and the TensorBoard run over. Without
    a `log_dir` nothing is kept.

    Args:
        log_dir: Optional TensorBoard log directory (default None: no files).
        every: Integer >= 1 (default 50, as Lightning's `log_every_n_steps`),
            record every `every` training steps (step 0 always). Recording
            costs a probed forward and backward pass (measured in the
            README: about 1.1-1.3x a plain step); at the default the
            overhead is within the noise of a step. `every=1` records all.
        on_nan: `"stop"` (default): do not apply the update with non-finite
            gradients, nor any later update of the `fit`, and end `fit` at
            the next recorded step (or epoch end): the weights and optimizer
            state are those of the last good step. `"skip"`: do not apply it
            and go on (weights and optimizer state unchanged, the count is
            recorded). `"warn"`: apply it as Keras would and warn. The
            monitor reads nothing from the device on steps it does not
            record (no wait for the device there): non-finite steps are
            decided and guarded in the graph on every step, and counted,
            located and warned about at the next recorded step, epoch end
            or train end. A gradient counts as non-finite
            when an element is NaN/Inf or the sum of its squares overflows
            float32 (an element above ~1.8e19): Adam's second moment would
            turn such a gradient into NaN weights.
        on_explode: `"warn"` (default) or `"stop"` when a recorded step
            explodes: across training steps, through time, or with
            non-finite gradients behind a finite loss (an overflow). The
            warning comes once per episode (consecutive exploding records)
            and points at the user's `fit` line.
        histograms: Default False. Write gradient histograms (copies every
            gradient to the host on recorded steps).
        contributions: Default True. Compute each time step's contribution
            to the recurrent-kernel gradient (one extra `(T*batch, units) x
            (units, units)` matmul per sublayer on recorded steps); False
            leaves the `contribution` column NaN.
        horizon_fraction: Default 1e-3, see `diagnostics.gradient_horizon`
            (a description: the verdicts do not read it).
        vanishing_ratio: Default 1e-2. A recurrent sublayer is *vanishing
            through time* when ||dL/dh_t|| at the step farthest back in the
            sequence (its valid steps) is below this fraction of its largest
            value: the start of the sequence gets less than 1% of the
            gradient. See `keras_seq.diagnostics.verdicts` for the
            definitions and their sources.
        exploding_ratio: Default 1e2. *Exploding through time*: the
            gradient grows going back by this factor or more over the
            sequence, compounding (its square root over the first half).
        explode_jump: Default 1e2. *Exploding across training steps*: the
            global norm stays at this factor or more over its starting
            level (the median of the model's first 5 records) for 3
            records in a row. A spike is not explosion.
        explode_threshold: Default None. An absolute global-norm limit, off
            unless given (a summed loss or a large batch makes big norms
            normal).
        depth_vanishing_ratio: Default 1e-2. A recurrent level whose gradient
            norm is below this fraction of the top level's is "vanishing
            through depth" (see `keras_seq.diagnostics.DepthDiagnosis`).
        depth_exploding_ratio: Default 1e2, the same upwards: "exploding
            through depth".
        epoch_logs: Default True. Add a one-line summary to Keras's epoch
            logs, so the progress bar, `History` and
            `keras.callbacks.TensorBoard` (listed after the monitor) show
            it: `grad_norm`, the mean global gradient norm of the epoch's
            recorded steps, and `grad_horizon`, the latest horizon of the
            recurrent sublayer nearest the loss (see `report()`). False
            leaves the logs as Keras made them.

    What it cannot see it says: a model without a recurrent layer, or with
    recurrent layers that get no per-step data (other cells, stacked cells),
    gets one warning when training begins and a line in `report()`. Two
    monitors in one `fit` raise a `ValueError`; a monitor moved to another
    model warns (its frames go on, its verdicts start over).

    Attributes:
        records: list of dicts, one per recorded step (the rows of
            `to_frame()`).
        skipped_steps: number of updates not applied, for any reason.
        loss_scale_skips: of those, the updates a
            `keras.optimizers.LossScaleOptimizer` skipped because its scaled
            gradients overflowed (routine under mixed precision).
        held_steps: of those, the updates withheld after a non-finite step
            under `on_nan="stop"` until the fit stopped (at most `every`
            steps, or up to the epoch's end).
        lost_steps: recorded steps whose records are lost: a restored
            backup stood for them but the journal no longer held them
            (empty unless a journal was damaged after a backup).

    Raises:
        TypeError: when attached to something that is not a Keras model, or
            to a model whose class overrides `train_step`.

    Example:

    >>> import numpy as np, keras, keras_seq
    >>> model = keras_seq.Sequential([
    ...     keras.Input((20, 3)),
    ...     keras_seq.layers.SharedRNN(8, depth=2),
    ...     keras.layers.Dense(1)])
    >>> model.compile(optimizer="adam", loss="mse")
    >>> monitor = keras_seq.callbacks.GradientMonitor(every=1)
    >>> _ = model.fit(np.ones((8, 20, 3)), np.ones((8, 1)), verbose=0,
    ...               callbacks=[monitor])
    >>> list(monitor.timestep_frame().columns[:5])
    ['step', 'fit', 'layer', 'timestep', 'grad_norm']
    """

    def __init__(
        self,
        log_dir=None,
        every=50,
        on_nan="stop",
        on_explode="warn",
        histograms=False,
        contributions=True,
        horizon_fraction=1e-3,
        vanishing_ratio=diagnostics.verdicts.VANISHING_RATIO,
        exploding_ratio=diagnostics.verdicts.EXPLODING_RATIO,
        explode_jump=diagnostics.verdicts.EXPLODE_JUMP,
        explode_threshold=None,
        depth_vanishing_ratio=diagnostics.depth.VANISHING_RATIO,
        depth_exploding_ratio=diagnostics.depth.EXPLODING_RATIO,
        epoch_logs=True,
    ):
        validation.check_positive_int("every", every)
        validation.check_bool("epoch_logs", epoch_logs)
        validation.check_choice("on_nan", on_nan, _ON_NAN)
        validation.check_choice("on_explode", on_explode, _ON_EXPLODE)
        validation.check_bool("histograms", histograms)
        validation.check_bool("contributions", contributions)
        for name in ("horizon_fraction", "vanishing_ratio", "depth_vanishing_ratio"):
            validation.check_fraction(name, locals()[name])
        for name in ("exploding_ratio", "explode_jump", "depth_exploding_ratio"):
            validation.check_factor(name, locals()[name])
        validation.check_positive_or_none("explode_threshold", explode_threshold)
        validation.check_path_or_none("log_dir", log_dir)
        super().__init__()
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.every = every
        self.on_nan = on_nan
        self.on_explode = on_explode
        self.histograms = histograms
        self.contributions = contributions
        self.horizon_fraction = horizon_fraction
        self.vanishing_ratio = vanishing_ratio
        self.exploding_ratio = exploding_ratio
        self.explode_jump = explode_jump
        self.explode_threshold = explode_threshold
        self.depth_vanishing_ratio = depth_vanishing_ratio
        self.depth_exploding_ratio = depth_exploding_ratio
        self.epoch_logs = epoch_logs
        self.skipped_steps = 0
        self.loss_scale_skips = 0
        self.held_steps = 0
        self.lost_steps = []
        self._new_lost = []
        self._records = records.GradientRecords(
            records.Thresholds(
                horizon_fraction,
                vanishing_ratio,
                exploding_ratio,
                explode_jump,
                explode_threshold,
                depth_vanishing_ratio,
                depth_exploding_ratio,
            ),
            directory=self._spill_directory,
        )
        self._nonfinite = None
        self._exploding_before = False  # the previous record exploded
        self._blind = ()  # report lines: what the monitor cannot see
        self._blind_model = None  # the model `_blind` describes
        self._overflows_seen = 0
        self._held_seen = 0  # updates withheld after a non-finite step
        self._recording = False  # the running execution records
        self._model_first_record = 0  # records before it: earlier models
        self._summaries = None  # summaries.GradientSummaries, with a log_dir
        self._counters = None
        self._counters_model = None
        self._training = None  # keras_seq.monitoring.MonitoredTraining
        self._fit = -1  # index of the current (last) fit call
        self._unprobed_checked = None  # the model checked for unprobed layers
        self._next_step = 0  # index of the next training step
        self._bad_seen = 0  # non-finite steps already reported
        self._journal = None  # journal.Journal, with a log_dir
        self._starting = False  # a fit began; its first batch not yet
        self._fits_on_model = 0
        self._models_seen = -1  # models attached so far, minus one
        self._offset = 0  # training steps minus optimizer iterations
        # Set by keras_seq.depth.fit_reducing_depth, which moves the monitor
        # to each shallower model on purpose: no warning then.
        self._moving = False

    def _spill_directory(self):
        return (
            None if self.log_dir is None else pathlib.Path(self.log_dir) / "gradients"
        )

    @property
    def records(self):
        """The rows of `to_frame()`, one dict per recorded step: a sequence
        in bounded memory (the last `records.MAX_RECORDS` rows in memory,
        older ones read back from Parquet parts)."""
        return self._records.rows

    @property
    def log_dir(self):
        """Where this monitor writes; None on the workers other than the
        chief under `tf.distribute.MultiWorkerMirroredStrategy` (and on JAX
        processes other than process 0), which hold the same statistics and
        frames but write nothing."""
        model = self._model
        if model is not None and not monitoring.writes_summaries(model):
            return None
        return self._log_dir

    @log_dir.setter
    def log_dir(self, value):
        self._log_dir = value

    @property
    def model(self):
        """The model, as Keras's `Callback.model` but without the state sync
        that property runs on JAX. The monitor reads no weights: its numbers
        come out of the training step. And it acts from inside the JAX
        training function (`MonitoredTraining.on_execution`), where Keras
        has not yet taken the new state back: a sync there would put the
        previous step's (donated) state into the variables."""
        return self._model

    # -- attaching -----------------------------------------------------------

    def set_model(self, model):
        monitoring.check_model(model)
        super().set_model(model)
        if self._counters is None or self._counters_model is not model:
            # Counted in the graph on every step, so steps inside one
            # execution (steps_per_execution > 1) are not missed. The
            # first step is set when the first batch begins (`_begin_fit`),
            # after `BackupAndRestore` restored the optimizer.
            self._counters = monitoring.device_variable(
                model, _fresh_counters(self._next_step, 0)
            )
            # The largest finite global norm since the last record: an
            # explosion to NaN between two records shows there.
            self._peak = monitoring.device_variable(model, np.float32(0.0))
            if (
                self._counters_model is not None
                and len(self.records) > (self._model_first_record)
                and not self._moving
            ):
                notices.warn(
                    "GradientMonitor: this monitor recorded another model "
                    f"({self._counters_model.name!r}) and is now attached to "
                    f"{model.name!r}. Its frames go on (new rows, step numbers "
                    "continuing), its verdicts start over for the new model. "
                    "Use one monitor per model to keep their records apart."
                )
            self._fits_on_model = 0
            self._models_seen += 1
            self._counters_model = model
            self._records.new_model()
            self._exploding_before = False
            self._model_first_record = len(self.records)
            if self._training is not None:
                self._training.uninstall()
            self._training = monitoring.MonitoredTraining(
                model,
                monitoring.MonitorSettings(
                    counters=self._counters,
                    guard=self.on_nan in ("stop", "skip"),
                    histograms=self.histograms,
                    contributions=self.contributions,
                    peak=self._peak,
                    hold=self.on_nan == "stop",
                ),
                on_execution=self._after_execution,
            )

    # -- training hooks ------------------------------------------------------

    def on_train_begin(self, logs=None):
        if self.log_dir is not None:
            notices.check_writable(self.log_dir)
        self._training.install()
        # keras_seq.callbacks.BackupAndRestore commits the journal and
        # saves the step count with each backup (in any callback order).
        monitoring.resumption.of(self.model).register(_NAME, self._commit)
        self._fit += 1
        counters = self._counters.numpy()
        counters[_COUNTER["stopped"]] = 0  # a new fit trains again
        self._counters.assign(counters)
        self._take_counters(counters)
        self._check_visibility()
        # Callbacks later in the list (BackupAndRestore) may still restore
        # the optimizer's step count: it is read at the first batch.
        self._starting = True

    def on_epoch_begin(self, epoch, logs=None):
        self._records.new_epoch(epoch)

    def _begin_fit(self):
        """Set the step of the fit's first batch, once every callback's
        `on_train_begin` ran (`BackupAndRestore` restores the optimizer
        there): the first fit on a model starts at the optimizer's restored
        step count (or after the steps already recorded on another model);
        a monitor with a `log_dir` holding an earlier run's journal resumes
        it (see `keras_seq.callbacks.journal`)."""
        self._starting = False
        if (
            self.log_dir is not None
            and self._records.store is None
            and self._records.timestep_backing is None
        ):
            # The journal keeps every per-time-step row: the store reads
            # them back from there instead of writing a second copy.
            state = pathlib.Path(self.log_dir) / "gradients" / journal.STATE_DIR
            self._records.timestep_backing = functools.partial(
                journal.timestep_tables, state
            )
        iterations = self._training.iterations()
        step, bad = self._next_step, self._bad_seen
        purge = None  # where readers drop earlier data; None: at `step`
        # What this monitor committed with the backup just restored.
        restored = monitoring.resumption.of(self.model).restored.pop(_NAME, None)
        if self._fits_on_model == 0:
            step = max(iterations, self._next_step)
            if restored is not None:
                step, bad = restored["step"], restored["nonfinite"]
            # Under several workers only the chief has a log_dir: resuming
            # there alone would number the workers' steps differently (and
            # mismatch their collectives), so all count from the optimizer.
            if (
                self._fit == 0
                and self.log_dir is not None
                and not _multiworker.active(self.model)
            ):
                step, bad, resumed = self._resume(
                    iterations, default=(step, bad), restored=restored
                )
                # A run that takes nothing over hides all earlier data.
                purge = step if resumed else 0
            self._counters.assign(_fresh_counters(step, bad))
            self._overflows_seen = self._held_seen = 0
            if restored is not None:
                self.skipped_steps = restored["skipped_steps"]
                self.held_steps = restored["held_steps"]
                self.loss_scale_skips = restored["loss_scale_skips"]
        self._fits_on_model += 1
        self._next_step, self._bad_seen = step, bad
        if self.log_dir is not None:
            self._get_summaries().start_session(step if purge is None else purge)
            if self._journal is None:
                self._journal = journal.Journal(
                    pathlib.Path(self.log_dir) / "gradients" / journal.STATE_DIR,
                    _TIMESTEP_COLUMNS,
                )
            self._journal.start(
                step,
                iterations,
                self._fit,
                self._models_seen,
                _shapes(self.model),
                purge=purge,
            )
            self._offset = step - iterations
            if self._new_lost:
                self._journal.lost(self._new_lost)
                self._get_summaries().extra(
                    step, texts={_LOST_TAG: _lost_text(self.lost_steps)}
                )
                self._new_lost = []

    def _resume(self, iterations, default, restored=None):
        """Take over an earlier process's journal under `log_dir`: keep what
        it recorded before the step the restored backup stands for, and
        return that step, the count of non-finite steps before it and True;
        `default` and False when there is nothing to take over. The step is
        the one this monitor saved with a `keras_seq` backup (`restored`),
        else the one the optimizer's `iterations` map to."""
        state = pathlib.Path(self.log_dir) / "gradients" / journal.STATE_DIR
        history = journal.load(state, timesteps=False)
        if any("rows" not in line for line in history.records):
            history = journal.load(state)  # a journal older than row counts
        step = history.resume_step(iterations)
        if restored is not None and step is not None:
            step = restored["step"]
        if step is None or history.shapes != _shapes(self.model):
            # No journal, another model's, or one that moved across models
            # (fit_reducing_depth): this run starts over, nothing taken.
            return (*default, False)
        history.purge_from(step)
        self._fit = history.last_fit + 1
        self._name_lost(history, restored)
        for line in history.records:
            row = line["row"]
            self._records.restore(
                line, history.timesteps.get((row["step"], row["fit"]))
            )
        bad, skipped, first = history.nonfinite_totals()
        if restored is not None:
            bad = restored["nonfinite"]  # skipped counts: set by the caller
        else:
            self.skipped_steps += skipped
        if first is not None:
            if self._nonfinite is None:
                self._nonfinite = diagnostics.NonFinite(*first, 0)
            self._nonfinite.count += bad
        # The START event `_begin_fit` writes at `step` hides the events the
        # earlier run wrote from `step` on; the layout at step 0 stays.
        self._get_summaries().layout_written = step > 0
        return step, bad, True

    def _name_lost(self, history, restored):
        """Records the restored backup says were committed but the journal
        lacks (a journal file lost or damaged after the backup): name them
        (`lost_steps`, the report, TensorBoard), never skip them silently."""
        present = {line["row"]["step"] for line in history.records}
        last = None if restored is None else restored.get("last_record")
        new = []
        if last is not None and last not in present:
            below = max((s for s in present if s < last), default=-1)
            if self.model.steps_per_execution == 1:
                new = [
                    s
                    for s in range(below + 1, last + 1)
                    if s % self.every == 0 and s not in present
                ]
            new = new or [last]
        self._new_lost = new
        self.lost_steps = sorted(set(history.lost) | set(new))
        if new:
            notices.warn(
                f"GradientMonitor: the records of step(s) {_steps(new)} are "
                "lost: the backup restored stands for them, but the journal "
                f"under {str(self.log_dir)!r} does not hold them (damaged or "
                "removed after the backup). The frames have no rows for "
                "them; `lost_steps` and the report name them."
            )

    def on_train_batch_begin(self, batch, logs=None):
        if self._starting:
            self._begin_fit()
        # Record an execution (steps_per_execution steps) holding a multiple
        # of `every`; its last step's statistics come back.
        first = self._next_step
        last = first + self.model.steps_per_execution - 1
        self._recording = (last // self.every) * self.every >= first
        self._training.select(self._recording)

    def _after_execution(self, statistics):
        """After every execution of the training function (see
        `MonitoredTraining`): on a light step only Python counting, no
        read from the device; on a recorded step the counters and the
        statistics are read (`_sync`)."""
        if statistics is None and not self._recording:
            # Corrected at the next read when an execution ran short (the
            # last one of an epoch under steps_per_execution > 1).
            self._next_step += self.model.steps_per_execution
            return
        self._sync(statistics)

    def _take_counters(self, counters):
        self._next_step = int(counters[_COUNTER["steps"]])
        self._bad_seen = int(counters[_COUNTER["nonfinite"]])
        self._overflows_seen = int(counters[_COUNTER["overflows"]])
        self._held_seen = int(counters[_COUNTER["held"]])

    def _sync(self, statistics=None):
        """Read the in-graph counters (one host read) and act on what
        happened since the last read: updates skipped, non-finite steps
        (`on_nan`), explosions; with `statistics`, record the last step."""
        counters = [int(v) for v in self._counters.numpy()]
        steps, bad, first_bad, last_bad, overflows, held, _ = counters
        step = steps - 1  # the last step run
        new_bad = bad - self._bad_seen
        new_overflows = overflows - self._overflows_seen
        new_held = held - self._held_seen
        self._take_counters(counters)
        # Updates the LossScaleOptimizer skipped on float16 overflows.
        self.skipped_steps += new_overflows + new_held
        self.loss_scale_skips += new_overflows
        self.held_steps += new_held
        location = (None, None)
        if statistics is not None:
            location = self._record(step, statistics)
        if new_bad:
            if last_bad != step or statistics is None:
                location = (None, None)  # not the recorded step
            if self._nonfinite is None and first_bad != last_bad:
                # Several bad steps since the last read: the diagnosis names
                # the first, which was not recorded.
                self._nonfinite = diagnostics.NonFinite(first_bad, None, None, 0)
            skipped_before = self.skipped_steps
            if last_bad != step or statistics is None:
                # The first non-finite step since the last read, when known.
                first_new = first_bad if new_bad == bad else last_bad
                self._explosion_between_records(first_new)
            self._on_nonfinite(last_bad, *location, count=new_bad)
            if self._journal is not None:
                self._journal.nonfinite(
                    last_bad,
                    first_bad,
                    new_bad,
                    skipped=self.skipped_steps - skipped_before,
                    location=location,
                )
        if statistics is not None and self.records[-1]["finite"]:
            self._peak.assign(0.0)  # the next non-finite step reads from here
        if self._journal is not None:
            # Training steps minus applied updates changes where an update
            # was skipped (by the guard, or by a LossScaleOptimizer on an
            # overflow the monitor does not count): the journal maps the
            # optimizer's count back to steps from these points.
            iterations = self._training.iterations()
            if steps - iterations != self._offset:
                self._offset = steps - iterations
                self._journal.offset(steps, iterations)

    def _commit(self):
        """Before a `keras_seq.callbacks.BackupAndRestore` backup: read the
        counters, journal what they show, make the journal durable, and
        return what the monitor needs to go on from this backup."""
        if not self._starting:
            self._sync()
        if self._summaries is not None:
            self._summaries.flush()
        if self._journal is not None:
            self._journal.sync()
        return {
            "step": self._next_step,
            "nonfinite": self._bad_seen,
            "skipped_steps": self.skipped_steps,
            "held_steps": self.held_steps,
            "loss_scale_skips": self.loss_scale_skips,
            "last_record": self.records[-1]["step"] if self.records else None,
        }

    def on_epoch_end(self, epoch, logs=None):
        if self._starting:
            return  # no batch ran
        self._sync()
        if self.epoch_logs and logs is not None:
            # Keras hands the same dict to the callbacks after this one:
            # the progress bar, History, keras.callbacks.TensorBoard.
            logs.update(self._records.epoch_summary())
        if self.log_dir is None or not self.records:
            return
        self._get_summaries().epoch(
            self.records[-1]["step"], self.diagnosis().markdown(), self.plot()
        )

    def on_train_end(self, logs=None):
        if self._starting and _NAME in monitoring.resumption.of(self.model).restored:
            # A fit that trained no batch after a restore (the same command
            # run again after a finished run): take over the journal all
            # the same, so the frames show the run.
            self._begin_fit()
        if not self._starting:
            self._sync()
        self._training.uninstall()
        monitoring.resumption.of(self.model).unregister(_NAME)
        if self._journal is not None:
            self._journal.close()
        if self._summaries is not None:
            self._summaries.close()

    # -- recording -----------------------------------------------------------

    def _record(self, step, statistics):
        """Append one recorded step; return where non-finite values start."""
        recorded = self._records.add(
            step,
            self._fit,
            statistics,
            records.RecordContext(
                model=self.model,
                sublayers=self._training.sublayers,
                variable_names=self._training.variable_names,
                layer_names=self._training.layer_names,
                on_nan=self.on_nan,
                loss_scaling=self._loss_scaling,
                peak=self._read_peak,
            ),
        )
        self._warn_unprobed(recorded.sublayers)
        exploding = recorded.evidence is not None
        if self.log_dir is not None:
            # Scalars reach the file first (flushed), then the journal
            # commits the record: a crash between them loses no point.
            self._write_scalars(recorded.row, statistics)
            self._journal.record(
                recorded.row,
                self._training.variable_names,
                self._training.layer_names,
                np.asarray(statistics["variable_norms"]),
                exploding,
                {
                    name: {c: np.asarray(values[c]) for c in _TIMESTEP_COLUMNS}
                    for name, values in statistics["sublayers"].items()
                },
            )
        if exploding:
            self._on_explode(step, recorded.evidence)
        self._exploding_before = exploding
        return recorded.location

    def _read_peak(self):
        """The largest finite global norm since the last read (a host
        read, on non-finite steps only), reset for the next."""
        peak = float(self._peak.numpy())
        self._peak.assign(0.0)
        return peak

    def _explosion_between_records(self, step):
        """A non-finite step that was not recorded: exploding when the
        global norm blew up before it (see `GradientRecords.blown_up`)."""
        if self._loss_scaling:
            return
        evidence = self._records.blown_up(self._read_peak())
        if evidence is None:
            return
        self._records.mark_exploding(step, evidence)
        self._on_explode(step, evidence)
        self._exploding_before = True

    def _on_explode(self, step, evidence):
        """`on_explode`'s action; the warning once per episode (consecutive
        exploding steps), not per step."""
        if self.on_explode == "stop":
            self.model.stop_training = True
        if self._exploding_before:
            return
        message = f"Exploding gradients at step {step}: {evidence}."
        if self.on_explode == "stop":
            message += " Stopping training (on_explode='stop')."
        notices.warn(message)

    def _warn_unprobed(self, sublayers):
        """Once per model: recurrent layers missing from a recorded step."""
        if self._unprobed_checked is self.model:
            return
        self._unprobed_checked = self.model
        line = notices.unprobed(self.model, sublayers)
        if line is not None:
            self._blind = self._blind + (line,)
            notices.warn(f"GradientMonitor: {line}.")

    def _check_visibility(self):
        """At train begin, once per model: what the monitor cannot see."""
        if self._blind_model is self.model:
            return
        self._blind_model = self.model
        line = notices.blind_spots(self.model)
        self._blind = () if line is None else (line,)
        if line is not None:
            notices.warn(f"GradientMonitor: {line}.")

    def _on_nonfinite(self, step, layer, timestep, count=1):
        if self._nonfinite is None:
            self._nonfinite = diagnostics.NonFinite(step, layer, timestep, count=0)
        self._nonfinite.count += count
        where = "" if layer is None else f" in {layer}"
        if timestep is not None:
            where += f" at time step {timestep}"
        what = "A non-finite loss" if self._loss_scaling else "Non-finite gradients"
        what += f" at step {step}{where}"
        if count > 1:
            what += f" ({count} such steps since the last read)"
        if self._loss_scaling or self.on_nan != "warn":
            self.skipped_steps += count
        if self.on_nan == "warn":
            applied = (
                "skipped by the LossScaleOptimizer" if self._loss_scaling else "applied"
            )
            notices.warn(f"{what}; the update was {applied} (on_nan='warn').")
        elif self.on_nan == "stop":
            self.model.stop_training = True
            notices.warn(
                f"{what}. The update was not applied; stopping with the weights "
                "of the last good step (on_nan='stop')."
            )
        if self._summaries is not None:
            self._summaries.flush()

    @property
    def _loss_scaling(self):
        return isinstance(self.model.optimizer, keras.optimizers.LossScaleOptimizer)

    # -- TensorBoard ---------------------------------------------------------

    def _get_summaries(self):
        if self._summaries is None:
            self._summaries = summaries.GradientSummaries(self.log_dir)
        return self._summaries

    def _write_scalars(self, row, statistics):
        counts = {"skipped_steps": self.skipped_steps}
        if self._loss_scaling:  # its own skips get a chart of their own
            counts["loss_scale_skips"] = self.loss_scale_skips
        histograms = None
        if self.histograms:
            gradients = statistics["gradients"]
            histograms = {
                path: gradients[f"{i:05d}"]
                for i, path in enumerate(self._training.variable_names)
            }
        self._get_summaries().scalars(row, counts, histograms)

    @property
    def steps(self):
        """Training steps run under this monitor so far (on every model it
        was attached to): the step the next batch will have."""
        return self._next_step

    def write_summary(self, step, scalars=None, texts=None):
        """Write extra scalars and Markdown texts into the monitor's
        TensorBoard run (`<log_dir>/gradients`) at training step `step`;
        nothing without a `log_dir`. `keras_seq.depth.fit_reducing_depth`
        writes its stages here.

        Args:
            step: Integer training step.
            scalars: Optional `{tag: number}`.
            texts: Optional `{tag: Markdown string}`.
        """
        if self.log_dir is None:
            return
        self._get_summaries().extra(step, scalars, texts)

    # -- results -------------------------------------------------------------

    def to_frame(self):
        """One row per recorded step.

        Columns: `step` (0-based training step), `fit` (which `fit` call
        under this monitor, from 0), `epoch`, `loss` (of that
        batch), `global_norm` (before clipping), `applied_norm` (after the
        optimizer's clipping), `finite`, `skipped` (update not applied),
        `skipped_by` (`"on_nan"`, `"loss_scale"` or `""`),
        `norm/<layer>` for every layer with weights, `horizon/<sublayer>`
        and `decay/<sublayer>` for every recurrent sublayer, and
        `depth_ratio/<level>` (the level's gradient norm over the top
        level's; see `keras_seq.diagnostics.DepthDiagnosis`) when the model
        has two or more recurrent levels in one stack.
        """
        return self._records.frame()

    def timestep_frame(self):
        """Long format, one row per (recorded step, sublayer, time step).

        Columns: `step`, `fit` (which `fit` call under this monitor, from
        0), `layer` (sublayer name), `timestep` (input order, 0 = first
        element of the sequence), `grad_norm` (||dL/dh_t||, total through
        the recurrence, over the whole batch), `contribution` (this
        step's share of the applied recurrent-kernel gradient, projected on
        its direction: the sum over time steps, and over sublayers sharing the
        kernel, is that gradient's norm), `valid_fraction` (the fraction of
        the batch's sequences for which this time step is not padding; 1.0
        without a mask), `cell_grad_norm` (||dL/dc_t|| of an LSTM's carry,
        total through h_t and the carry; NaN for other layers).

        Long runs stay bounded in memory: beyond `records.MAX_TIMESTEP_ROWS` rows
        (200,000) they are written to Parquet parts, under
        `<log_dir>/gradients/timesteps/` or a temporary directory without a
        `log_dir`, and read back here: the frame holds every recorded row.

        Horizons and verdicts read the valid steps only, each sequence's
        counted back from its own last valid step (see
        `keras_seq.diagnostics.SublayerDiagnosis`); `grad_norm` here is the
        plain per-time-step norm over the batch.
        """
        return self._records.timestep_frame()

    def variable_frame(self):
        """Long format, one row per (recorded step, variable).

        Columns: `step`, `variable` (its path), `layer`, `grad_norm`.
        """
        return self._records.variable_frame()

    def save(self, path):
        """Write `to_frame()` to `path` and `timestep_frame()` beside it
        (`<stem>_timesteps<suffix>`), as CSV (`.csv`) or Parquet
        (`.parquet`, needs pyarrow). Each file is written whole or not at
        all (a temporary file beside it, renamed when complete): a process
        killed while saving leaves the old file or the new one.

        Returns:
            The two paths written.
        """
        path = pathlib.Path(path)
        writers = {".csv": "to_csv", ".parquet": "to_parquet"}
        if path.suffix not in writers:
            raise ValueError(
                "Argument `path` must end in .csv or .parquet. "
                f"Received: path={str(path)!r}"
            )
        timestep_path = path.with_name(f"{path.stem}_timesteps{path.suffix}")
        with _atomic.replacing(path) as partial:  # whole or not at all
            getattr(self.to_frame(), writers[path.suffix])(partial, index=False)
        self._records.save_timesteps(timestep_path, writers[path.suffix])
        return path, timestep_path

    def heatmaps(self):
        """`{sublayer: RGB uint8 image}` of the heatmap figures (see
        `plot`), as written to TensorBoard."""
        return {
            name[len("heatmap/") :]: figures.to_image(figure)
            for name, figure in self.plot().items()
            if name.startswith("heatmap/")
        }

    def plot(self):
        """The monitor's pictures as matplotlib figures, for notebooks (the
        same go to TensorBoard as images at each epoch end):

        - `"heatmap/<sublayer>"`: log10 ||dL/dh_t|| with time step across
          (input order) and recorded training step down, over the last 256
          recorded steps, a colour bar, and the sublayer and its latest
          horizon in the title;
        - `"decay"`: ||dL/dh_t|| against steps back from each sequence's
          last valid step (log scale), one line per sublayer, averaged over
          the recorded steps of the last epoch: the textbook picture of
          vanishing (falling lines) or exploding (rising) gradients.

        Returns:
            `{name: matplotlib.figure.Figure}`; empty before any record.
        """
        return self._records.figures()

    def diagnosis(self):
        """The verdict on the latest recorded step, a
        `keras_seq.diagnostics.Diagnosis`."""
        step = self.records[-1]["step"] if self.records else None
        steps = list(self._records.exploding_steps)
        return diagnostics.Diagnosis(
            step=step,
            sublayers=dict(self._records.latest),
            exploding=bool(steps) and steps[-1] == step,
            exploding_steps=steps,
            nonfinite=self._nonfinite,
            skipped_steps=self.skipped_steps,
            depth=self._records.latest_depth,
            notes=self._blind + self._notes(),
            exploding_evidence=dict(self._records.exploding_evidence),
            loss_scale_skips=self.loss_scale_skips,
            vanishing_ratio=self.vanishing_ratio,
            held_steps=self.held_steps,
        )

    def _notes(self):
        lost = (_lost_text(self.lost_steps),) if self.lost_steps else ()
        if self.model is None:
            return lost
        note = notices.stateful_note(self.model, self._records.latest)
        return lost + (() if note is None else (note,))

    def report(self):
        """The diagnosis as plain text."""
        return self.diagnosis().report()


_COUNTER = {name: i for i, name in enumerate(monitoring.guard.COUNTERS)}
_LOST_TAG = "gradients/lost_steps"


def _steps(steps):
    shown = ", ".join(str(s) for s in steps[:10])
    return shown + (f" and {len(steps) - 10} more" if len(steps) > 10 else "")


def _lost_text(steps):
    return (
        f"Records lost: step(s) {_steps(steps)} were recorded before a crash, "
        "but their journal lines were gone when the run resumed (no rows in "
        "the frames)."
    )


def _fresh_counters(step, nonfinite):
    counters = [0] * len(_COUNTER)
    counters[_COUNTER["steps"]] = step
    counters[_COUNTER["nonfinite"]] = nonfinite
    counters[_COUNTER["first_nonfinite"]] = counters[_COUNTER["last_nonfinite"]] = -1
    return np.array(counters, np.int64)


def _shapes(model):
    """The trainable variables' shapes: which model a journal belongs to
    (names carry Keras's per-process numbering, `dense_1`, so they differ
    across processes)."""
    return [list(v.shape) for v in model.trainable_variables]
