package lifecycle

import (
	"log/slog"

	"github.com/hsmfs/hsmfs/internal/backing"
	"github.com/hsmfs/hsmfs/internal/hsm"
	"github.com/hsmfs/hsmfs/journal"
)

// openHSM loads the HSM's table from the journal and recovers the
// transitions that a crash interrupted, before the mount serves.
func openHSM(a Config, b *backing.Tree, j *journal.Journal, log *slog.Logger) (*hsm.Manager, error) {
	return hsm.New(hsmTable{j}, hsm.Options{Log: log, RestoreTimeout: a.RestoreTimeout, Root: b.RootFd(), Dev: b.Dev()})
}

// hsmTable keeps the HSM's rows in the journal.
type hsmTable struct{ j *journal.Journal }

func (t hsmTable) PutRows(rows []hsm.Row) error {
	out := make([]journal.TableRow, len(rows))
	for i, r := range rows {
		out[i] = journal.TableRow{Name: r.Name, Value: r.Value}
	}
	return t.j.PutTable(out)
}

func (t hsmTable) ScanRows(fn func(name string, value []byte) error) error {
	return t.j.ScanTable(fn)
}
