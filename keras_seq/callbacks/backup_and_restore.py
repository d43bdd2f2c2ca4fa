import json
import os
import pathlib
import shutil
import time
import warnings

import keras

from keras_seq import _atomic
from keras_seq.monitoring import resumption

POINTER = "latest.json"
FORMAT = 1
_UNIT = "unit-{:08d}.weights.h5"


class BackupAndRestore(keras.callbacks.Callback):
    """Backs up training so that a killed run, started again with the same
    command, goes on where it was: at the batch, not only at the epoch.

    A drop-in for `keras.callbacks.BackupAndRestore` (the same arguments and
    meaning), with three guarantees Keras's callback (3.15) does not give:

    - **A kill at any instant leaves a backup that loads.** Each backup is
      one unit: the weights with the optimizer's state
      (`unit-<n>.weights.h5`, written to a temporary file, `fsync`ed and
      renamed) and `latest.json`, the pointer to it with the position in
      training (epoch, batches done in it) and the state of the callbacks
      that keep their own, written the same way after the weights. A
      restart finds the old unit or the new one, never a torn file or new
      weights paired with an old epoch (Keras writes its weights in place
      and its epoch after them, keras-team/keras#20463).
    - **Resume at the batch.** After a backup in the middle of an epoch,
      the resumed run passes over the batches of that epoch the backup
      holds (reads them and drops them, updating nothing) and trains from
      the next one: with a fixed batch order it ends with the weights an
      uninterrupted run ends with, and trains each step once.
    - **The backup and the monitor agree.** Before each backup, a
      `keras_seq.callbacks.GradientMonitor` on the same model commits its
      journal (the records, the non-finite steps) to disk and hands over its
      step count, which the unit keeps: a backup never stands for a step
      the journal has not committed, whatever order the callbacks are
      listed in, and the resumed monitor numbers steps from the unit.

    What resumes exactly: the weights, the optimizer (its state and step
    count) and the position. Data with a fixed order (`shuffle=False` on
    arrays, a `tf.data.Dataset` or `keras.utils.PyDataset` that gives the
    same batches each epoch) resumes on the same batch. Shuffled arrays
    (`shuffle=True`, Keras's default) draw a new order in a new process:
    the resumed epoch trains its remaining number of batches, from that new
    order. A dataset that `fit` keeps iterating across epochs
    (`steps_per_epoch` on a repeated dataset) starts again from its own
    beginning in a new process. Metric averages of the resumed epoch, and
    the state of other callbacks (`ReduceLROnPlateau`, `EarlyStopping`),
    start afresh, as with Keras's callback.

    Files: `backup_dir` holds `latest.json` and one `unit-<n>.weights.h5`
    (two with `double_checkpoint=True`); nothing else may be written
    there. Under `tf.distribute.MultiWorkerMirroredStrategy` only the chief
    writes; every worker restores from `backup_dir`, which must then be
    shared. Durability: a unit is `fsync`ed before the pointer names it, so
    it survives a power cut as well as a killed process.

    Args:
        backup_dir: Path of the directory for the backup (made if missing).
        save_freq: `"epoch"` (back up at the end of each epoch), a positive
            integer (every `save_freq` batches, counted as Keras counts
            them), or `False` (never; a backup already there is still
            restored).
        double_checkpoint: Keep the previous unit too, and restore it when
            the latest one cannot be read (a disk error). Defaults to False.
        delete_checkpoint: Delete the backup when `fit` ends (not when it is
            interrupted). Defaults to True, as in Keras; then running the
            same command after a finished run trains again from the start.
            With False a finished run's command, run again, resumes at the
            end and trains nothing.

    Example:

    ```python
    model.fit(x, y, epochs=20, shuffle=False, callbacks=[
        keras_seq.callbacks.BackupAndRestore("backup", save_freq=100),
        keras_seq.callbacks.GradientMonitor(log_dir="logs")])
    ```
    """

    def __init__(
        self,
        backup_dir,
        save_freq="epoch",
        double_checkpoint=False,
        delete_checkpoint=True,
    ):
        super().__init__()
        if not isinstance(backup_dir, (str, os.PathLike)) or not str(backup_dir):
            raise ValueError(
                "Argument `backup_dir` must be a non-empty path (str or "
                f"os.PathLike). Received: backup_dir={backup_dir!r}"
            )
        if not (
            save_freq == "epoch"
            or save_freq is False
            or (
                isinstance(save_freq, int)
                and not isinstance(save_freq, bool)
                and save_freq > 0
            )
        ):
            raise ValueError(
                "Argument `save_freq` must be 'epoch', a positive integer "
                f"(batches) or False. Received: save_freq={save_freq!r}"
            )
        for name, value in (
            ("double_checkpoint", double_checkpoint),
            ("delete_checkpoint", delete_checkpoint),
        ):
            if not isinstance(value, bool):
                raise TypeError(
                    f"Argument `{name}` must be True or False. "
                    f"Received: {name}={value!r}"
                )
        self.backup_dir = backup_dir
        self.save_freq = save_freq
        self.double_checkpoint = double_checkpoint
        self.delete_checkpoint = delete_checkpoint
        self._reset_position()

    def _reset_position(self):
        self._epoch = 0
        self._batches = 0  # batches of `_epoch` done (trained or passed over)
        self._since = 0  # batches trained since the last backup
        self._passed_over = (-1, 0)  # (epoch, batches) the restore holds
        self._unit = None  # the pointer of the unit on disk
        self._sequence = 0
        self._wrapper = None
        self._set_initial_epoch = False

    @property
    def _directory(self):
        return pathlib.Path(self.backup_dir)

    def _writes(self):
        strategy = getattr(self.model, "distribute_strategy", None)
        return strategy is None or strategy.extended.should_checkpoint

    # -- restoring -----------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._reset_position()
        meeting = resumption.of(self.model)
        meeting.pass_over = 0
        meeting.restored = {}
        if self._writes():
            _atomic.remove_partials(self._directory)
        pointer = self._read_pointer()
        if pointer is None:
            return
        if not self.model.built:
            raise ValueError(
                "To use the BackupAndRestore callback, the model must be built "
                "before `fit()` (call it on a batch of data, or give it an "
                f"Input). Model {self.model.name!r} is not built."
            )
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            # Its variables must exist to be loaded.
            optimizer.build(self.model.trainable_variables)
        unit = self._load(pointer)
        # The unit that loaded: after a fallback, the next backup's
        # `previous` is this one, not the unreadable latest.
        self._unit = unit
        self._sequence = pointer["sequence"]
        epoch, batches = unit["epoch"], unit["batch"]
        # The epoch fit starts at: Keras's own BackupAndRestore sets this
        # attribute of the model too (Keras has no public way);
        # tests/callbacks/test_backup_and_restore.py notices if it changes.
        self.model._initial_epoch = epoch
        self._set_initial_epoch = True
        self._epoch, self._batches = epoch, batches
        self._passed_over = (epoch, batches)
        meeting.pass_over = batches
        meeting.restored = dict(unit.get("callbacks", {}))
        if batches:
            self._wrapper = resumption.passing_over(
                self.model, self.model.train_function
            )
            self._wrapper_of = self.model.train_function
            self.model.train_function = self._wrapper

    def _read_pointer(self):
        path = self._directory / POINTER
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            pointer = json.loads(text)
            if pointer.get("format") != FORMAT:
                raise ValueError(f"format {pointer.get('format')!r}")
            return pointer
        except ValueError as error:
            raise ValueError(
                f"The backup pointer {str(path)!r} is not one that "
                "keras_seq.callbacks.BackupAndRestore wrote "
                f"({error}). Argument `backup_dir` must be a directory "
                "only this callback writes to."
            ) from None

    def _load(self, pointer):
        """Load the latest unit (or, after a read error, the previous one
        with `double_checkpoint`); the unit loaded."""
        units = [pointer]
        if pointer.get("previous") is not None:
            units.append(pointer["previous"])
        for index, unit in enumerate(units):
            path = self._directory / unit["weights"]
            try:
                self.model.load_weights(path)
                return unit
            except OSError as error:
                if index + 1 == len(units):
                    raise OSError(
                        f"The backup {str(path)!r} cannot be read: {error}"
                    ) from error
                warnings.warn(
                    f"BackupAndRestore: the backup {str(path)!r} cannot be "
                    f"read ({error}); restoring the previous one "
                    f"({units[index + 1]['weights']!r}, epoch "
                    f"{units[index + 1]['epoch']}, batch "
                    f"{units[index + 1]['batch']}).",
                    stacklevel=2,
                )
        raise AssertionError("unreachable")

    # -- backing up ----------------------------------------------------------

    def on_epoch_begin(self, epoch, logs=None):
        if epoch != self._epoch:
            self._batches = 0
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        done = batch + 1
        if (self._epoch, done) <= self._passed_over:
            return  # passed over: the restored unit holds this batch
        self._since += done - self._batches if done > self._batches else done
        self._batches = done
        if self.save_freq == "epoch" or self.save_freq is False:
            return
        if self._since >= self.save_freq:
            self._save(self._epoch, done)

    def on_epoch_end(self, epoch, logs=None):
        self._batches = 0
        if self.save_freq == "epoch":
            self._save(epoch + 1, 0)

    def _save(self, epoch, batches):
        self._since = 0
        steps = self.params.get("steps") if self.params else None
        if steps and batches >= steps:
            epoch, batches = epoch + 1, 0  # the epoch is done
        # The monitor's journal first: the unit never stands for a step
        # the journal has not committed.
        callbacks = resumption.of(self.model).commit()
        if not self._writes():
            return
        self._directory.mkdir(parents=True, exist_ok=True)
        self._sequence += 1
        name = _UNIT.format(self._sequence)
        with _atomic.replacing(self._directory / name, durable=True) as partial:
            self.model.save_weights(partial)
        previous = None
        if self.double_checkpoint and self._unit is not None:
            previous = {k: v for k, v in self._unit.items() if k != "previous"}
        pointer = {
            "format": FORMAT,
            "sequence": self._sequence,
            "weights": name,
            "epoch": epoch,
            "batch": batches,
            "iterations": _iterations(self.model),
            "callbacks": callbacks,
            "saved": time.time(),
            "previous": previous,
        }
        _atomic.write_text(
            self._directory / POINTER,
            json.dumps(pointer, allow_nan=True),
            durable=True,
        )
        self._unit = pointer
        keep = {name} | ({previous["weights"]} if previous else set())
        for path in self._directory.glob("unit-*.weights.h5"):
            if path.name not in keep:
                path.unlink(missing_ok=True)

    # -- ending --------------------------------------------------------------

    def on_train_end(self, logs=None):
        if self._wrapper is not None and self.model.train_function is self._wrapper:
            self.model.train_function = self._wrapper_of
        self._wrapper = None
        if self._set_initial_epoch:
            self.model._initial_epoch = None  # a later fit starts as asked
        # What was restored stays for the callbacks ending after this one
        # (each takes its own state); the next fit with a backup resets it.
        resumption.of(self.model).pass_over = 0
        if self.delete_checkpoint and self._writes() and self._directory.exists():
            # The pointer first: a kill during the removal leaves no
            # pointer to a half-removed unit.
            (self._directory / POINTER).unlink(missing_ok=True)
            _atomic.fsync_directory(self._directory)
            shutil.rmtree(self._directory, ignore_errors=True)


def _iterations(model):
    optimizer = model.optimizer
    if optimizer is None:
        return None
    return int(keras.ops.convert_to_numpy(optimizer.iterations))
