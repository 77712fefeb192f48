package checkpoint

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Named consumers (as Lustre's changelog users): each queries and
// blesses on its own cursor, and a record is discarded only once every
// consumer has blessed past it.
//
// The default consumer (.hsm/changes, name "") keeps its cursor in State
// itself (LastQuery, LastBlessed, NotQueries, RecoveredAt, Full, and when
// and by whom it last queried and blessed).
// A named consumer has its own in State.Consumers. Periods are shared: a
// query of any consumer starts the next period, and every consumer's
// answer starts at its own LastBlessed. The journal keeps every record
// from the lowest LastBlessed of all (keepFrom).
//
// Why each consumer's guarantees hold as the default's do: a consumer's
// answer is a query like the default's (the same drain, the same stages)
// over the records from its own LastBlessed, and those are all still in
// the journal, because nothing at or above the lowest cursor is
// discarded. What one consumer's query adds to the journal (derived
// records of P-1 and P) is seen by the others as extra paths only, which
// rsync copies harmlessly; they too stay until every consumer has
// blessed past them. A consumer may bless only its own queries: a period
// that another consumer's query started is in the default's NotQueries
// and in no other consumer's Queries.

var (
	// ErrUnknownConsumer: no consumer has that name (ENOENT).
	ErrUnknownConsumer = errors.New("no such consumer")
	// ErrConsumerExists: a consumer of that name exists (EEXIST).
	ErrConsumerExists = errors.New("exists already")
	// ErrBadConsumerName: not a valid name (EINVAL).
	ErrBadConsumerName = errors.New("bad consumer name: 1 to 64 of A-Z a-z 0-9 . _ -, not starting with a dot, not \"default\"")
	// ErrFullCopy: a bless of an answer that said full did not say that
	// the whole tree was copied (EINVAL).
	ErrFullCopy = errors.New("a bless of a full answer must say full")
)

// DefaultConsumer is how the consumer of .hsm/changes is named in lists.
const DefaultConsumer = "default"

var consumerName = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$`)

// Consumer is the durable cursor of one named consumer.
type Consumer struct {
	Name        string
	LastQuery   uint64
	LastBlessed uint64   // its answers start here
	Queries     []uint64 // its queries above LastBlessed: only those may be blessed
	RecoveredAt uint64   // as State.RecoveredAt, for this consumer
	// Full: the consumer must copy the whole tree once (it was added,
	// or reset by the lag policy); said until its first bless.
	Full bool
	// Reset: the lag policy dropped its backlog; said until its next bless.
	Reset bool
	// Unix seconds: when it was added, last queried, last blessed.
	Added, QueryTime, BlessTime int64
	// BlessedBy is who made its last bless ("" if the bless named no one).
	BlessedBy string
	// BlessSeq is as State.BlessSeq, for this consumer.
	BlessSeq uint64
}

// AddConsumer registers a named consumer. Its first answer says full:
// it copies the whole tree once, after that query and before its bless.
// Its answers start at the current period.
func (t *Tracker) AddConsumer(name string) error {
	if !consumerName.MatchString(name) || name == DefaultConsumer {
		return fmt.Errorf("consumer %q: %w", name, ErrBadConsumerName)
	}
	t.qmu.Lock()
	defer t.qmu.Unlock()
	if st := t.stateNow(); st.consumer(name) != nil {
		return fmt.Errorf("consumer %q: %w", name, ErrConsumerExists)
	}
	now := time.Now().Unix()
	return t.saveState(func(s *State) {
		s.Consumers = append(s.Consumers, Consumer{Name: name, LastBlessed: t.ps.cur.Load(), Full: true, Added: now})
		slices.SortFunc(s.Consumers, func(a, b Consumer) int { return strings.Compare(a.Name, b.Name) })
	})
}

// RequireFullCopy makes every consumer, the default one included, copy
// the whole tree once: its answers say full until it blesses one of
// them. The mount calls it when its check for changes made around hsmfs
// cannot list what was removed (a damaged or missing tree index), before
// the mount goes live. A query answered before cannot be blessed any
// more: blessing it would end the requirement without the copy.
func (t *Tracker) RequireFullCopy() error {
	t.qmu.Lock()
	defer t.qmu.Unlock()
	return t.saveState(func(s *State) {
		s.Full = true
		not := make(map[uint64]bool, len(s.NotQueries))
		for _, p := range s.NotQueries {
			not[p] = true
		}
		for p := s.LastBlessed + 1; p <= s.LastQuery; p++ {
			if !not[p] {
				s.NotQueries = append(s.NotQueries, p)
			}
		}
		for i := range s.Consumers {
			s.Consumers[i].Full, s.Consumers[i].Queries = true, nil
		}
	})
}

// RemoveConsumer forgets a named consumer; what only it needed is
// discarded.
func (t *Tracker) RemoveConsumer(name string) error {
	t.qmu.Lock()
	defer t.qmu.Unlock()
	if st := t.stateNow(); st.consumer(name) == nil {
		return fmt.Errorf("consumer %q: %w", name, ErrUnknownConsumer)
	}
	var keep uint64
	err := t.saveState(func(s *State) {
		s.Consumers = slices.DeleteFunc(s.Consumers, func(c Consumer) bool { return c.Name == name })
		keep = s.keepFrom()
	})
	if err == nil {
		t.collect(keep)
	}
	return err
}

// resetLaggards applies the lag policy (Options.ConsumerMaxAge): a named
// consumer that has not blessed for longer loses its backlog, and its
// next answer says reset and full. Caller holds qmu.
func (t *Tracker) resetLaggards(now time.Time) error {
	if t.maxLag <= 0 {
		return nil
	}
	st := t.stateNow()
	var late []string
	for _, c := range st.Consumers {
		if now.Sub(time.Unix(max(c.BlessTime, c.Added), 0)) > t.maxLag && !c.Reset {
			late = append(late, c.Name)
		}
	}
	if len(late) == 0 {
		return nil
	}
	cur := t.ps.cur.Load()
	var keep uint64
	err := t.saveState(func(s *State) {
		for _, name := range late {
			c := s.consumer(name)
			c.LastBlessed, c.Queries, c.RecoveredAt = cur, nil, 0
			c.Reset, c.Full = true, true
			c.BlessTime = now.Unix()
		}
		keep = s.keepFrom()
	})
	if err != nil {
		return fmt.Errorf("reset lagging consumers: %w", err)
	}
	t.log.Error("consumers reset: they had not blessed within the allowed lag; their next answer says reset and full, and they must copy the whole tree", "consumers", late, "max_lag", t.maxLag)
	t.collect(keep)
	return nil
}

// warnLaggards logs, at most once a warning age per consumer, the named
// consumers that have not blessed for longer than it. Caller holds qmu.
func (t *Tracker) warnLaggards(now time.Time) {
	if t.warnLag <= 0 {
		return
	}
	for _, c := range t.stateNow().Consumers {
		since := now.Sub(time.Unix(max(c.BlessTime, c.Added), 0))
		if since > t.warnLag && now.Sub(t.warned[c.Name]) > t.warnLag {
			if t.warned == nil {
				t.warned = make(map[string]time.Time)
			}
			t.warned[c.Name] = now
			t.log.Warn("consumer lagging: it has not blessed for longer than the warning age; its records stay in the journal until it does (see --consumer-max-age)",
				"consumer", c.Name, "since_bless", since.Round(time.Second), "warn_age", t.warnLag)
		}
	}
}

// ConsumerNames lists the named consumers (not the default).
func (t *Tracker) ConsumerNames() []string {
	st := t.stateNow()
	names := make([]string, len(st.Consumers))
	for i, c := range st.Consumers {
		names[i] = c.Name
	}
	return names
}

// ConsumerStatus is what consumer list shows of one consumer.
type ConsumerStatus struct {
	Name         string
	LastQuery    uint64
	LastBlessed  uint64
	QueryTime    int64 // unix seconds, 0: never
	BlessTime    int64
	BlessedBy    string // who made the last bless ("" if it named no one)
	PendingPaths int
	// OldestAge is the age in seconds of its oldest unblessed record (0:
	// none).
	OldestAge float64
	Full      bool
	Reset     bool
	// Lagging: it has not blessed for longer than the warning age.
	Lagging bool
}

// consumers lists every consumer, the default first, with what each has
// pending (ps, from Pending).
func (t *Tracker) consumers(ps []Pending) []ConsumerStatus {
	st := t.stateNow()
	out := []ConsumerStatus{{Name: DefaultConsumer, LastQuery: st.LastQuery, LastBlessed: st.LastBlessed, Full: st.Full,
		QueryTime: st.QueryTime, BlessTime: st.BlessTime, BlessedBy: st.BlessedBy}}
	for _, c := range st.Consumers {
		out = append(out, ConsumerStatus{Name: c.Name, LastQuery: c.LastQuery, LastBlessed: c.LastBlessed,
			QueryTime: c.QueryTime, BlessTime: c.BlessTime, BlessedBy: c.BlessedBy, Full: c.Full, Reset: c.Reset,
			Lagging: t.warnLag > 0 && time.Since(time.Unix(max(c.BlessTime, c.Added), 0)) > t.warnLag})
	}
	for i := range out {
		for _, p := range ps {
			if p.Consumer == out[i].Name {
				out[i].PendingPaths = p.Paths
				if !p.Oldest.IsZero() {
					out[i].OldestAge = time.Since(p.Oldest).Seconds()
				}
			}
		}
	}
	return out
}
