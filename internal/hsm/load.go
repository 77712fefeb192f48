package hsm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// load reads the table and recovers every transition that a crash left
// pending, durably, before the mount serves anything:
//
//   - archive: the object may be partial or complete, but it never
//     committed: it is collected, and the file keeps its earlier state.
//   - release: (written by no hsmfs now: a release's one record says
//     released before any block is freed) the archive is committed and
//     verified, so the file is released.
//   - restore: the content may be partly written and not synced: the
//     file stays released and is restored from zero on its next open.
//   - remove: the object may be gone: it is collected (again), and the
//     file is not archived.
//   - truncate: stays pending until the file is next looked at; its size
//     then says whether the truncation happened (settleTruncate).
func (m *Manager) load() error {
	var recovered []Row
	err := m.store.ScanRows(func(name string, v []byte) error {
		switch {
		case strings.HasPrefix(name, rowTier):
			var t TierRow
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("hsm: damaged tier row %q: %w", name, err)
			}
			m.tiers[t.ID] = &tierSlot{row: t}
		case strings.HasPrefix(name, rowFile):
			var f File
			if err := json.Unmarshal(v, &f); err != nil {
				return fmt.Errorf("hsm: damaged file row %q: %w", name, err)
			}
			if f.Pending != nil {
				recovered = append(recovered, recoverPending(&f)...)
			}
			m.files[f.Ino] = &entry{f: f}
		}
		return nil
	})
	if err != nil {
		return err
	}
	m.tracked.Store(int64(len(m.files)))
	if len(recovered) > 0 {
		if err := m.store.PutRows(recovered); err != nil {
			return fmt.Errorf("hsm: recover: %w", err)
		}
		m.log.Info("hsm: recovered transitions that a crash interrupted", "rows", len(recovered))
	}
	return nil
}

// recoverPending finishes or undoes f's pending transition and returns
// the rows that record it: an orphan before the file's row, as in
// Archive's abort.
func recoverPending(f *File) []Row {
	p := f.Pending
	f.Pending = nil
	var rows []Row
	switch p.Op {
	case OpArchive:
		rows = append(rows, orphanRow(p.Tier, p.Object))
	case OpRelease:
		f.Flags |= Released
	case OpRemove:
		rows = append(rows, orphanRow(f.Tier, f.Object))
		unarchive(f)
	case OpTruncate:
		f.Pending = p // settled by the file's size at the next look (settleTruncate)
		return nil
	}
	return append(rows, fileRow(f))
}

// collectOrphans deletes the tier objects that the table lists as
// orphans, in the background; one collection runs at a time.
func (m *Manager) collectOrphans() {
	if !m.collecting.CompareAndSwap(false, true) {
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer m.collecting.Store(false)
		var names []string
		m.store.ScanRows(func(name string, _ []byte) error {
			if strings.HasPrefix(name, rowOrphan) {
				names = append(names, name)
			}
			return nil
		})
		for _, name := range names {
			select {
			case <-m.closed:
				return
			default:
			}
			id, object, ok := parseOrphan(name)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			err := m.collect(ctx, id, object, ok)
			cancel()
			if err != nil {
				m.log.Warn("hsm: could not delete an orphaned tier object; will retry", "row", name, "err", err)
				continue
			}
			if err := m.store.PutRows([]Row{{Name: name}}); err != nil {
				return
			}
		}
	}()
}

// collect deletes one orphan object; a row that names no tier any more
// (or nothing) is dropped as done.
func (m *Manager) collect(ctx context.Context, id uint32, object string, ok bool) error {
	if !ok {
		return nil
	}
	tr, err := m.tier(ctx, id)
	if err != nil {
		if errors.Is(err, ErrNoTier) {
			return nil
		}
		return err
	}
	return tr.Remove(ctx, object)
}
