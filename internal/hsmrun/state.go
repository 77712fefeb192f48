package hsmrun

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// state is what hsm run keeps between rounds and across restarts.
type state struct {
	Version int `json:"version"`
	// Mountpoint is the mount this state belongs to.
	Mountpoint string `json:"mountpoint"`
	// Candidates are the files to archive once they are old enough:
	// path → when an answer first listed it (unix seconds).
	Candidates map[string]int64 `json:"candidates"`
	// Archived are the files archived, by inode: their latest path, the
	// candidates of a release.
	Archived map[uint64]string `json:"archived"`
}

func newState(mnt string) *state {
	return &state{Version: 1, Mountpoint: mnt, Candidates: map[string]int64{}, Archived: map[uint64]string{}}
}

// loadState reads the state file; a missing one is a new state.
func loadState(path, mnt string) (*state, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return newState(mnt), nil
	}
	if err != nil {
		return nil, err
	}
	st := newState(mnt)
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("state file %s: %w (remove it to start over: the next round copies nothing twice, it walks the tree once)", path, err)
	}
	if st.Mountpoint != mnt {
		return nil, fmt.Errorf("state file %s belongs to %s, not %s", path, st.Mountpoint, mnt)
	}
	if st.Candidates == nil {
		st.Candidates = map[string]int64{}
	}
	if st.Archived == nil {
		st.Archived = map[uint64]string{}
	}
	return st, nil
}

// save writes the state durably: a temporary file, synced, renamed over
// the old one, the directory synced.
func (st *state) save(path string) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
