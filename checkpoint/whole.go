package checkpoint

import (
	"fmt"
	"time"
)

// Whole answers: the bound that holds in every case.
//
// The rules that list old names (renames.go, oldnames.go) keep an answer
// near 4 × (tree entries + operations) in every storm the tests run, but
// no rule that lists names can promise a bound in every case: a directory
// of N entries renamed through k names, each made a directory again,
// leaves k·N names that a copy may hold; after a crash that lost the fine
// records, the path rule lists what every old name may have held, which
// multiplied by depth before the inode rule. So the answer has a valve:
// once its paths pass limit = wholeFactor × (inodes of BACKING's file
// system + records read), the query stops listing and answers full
// instead, with no path: the consumer copies the whole tree, which costs
// what the tree costs, never more. The plain answer says nothing of full
// (it has no header), so the consumer's state says full, durably, before
// the answer is returned: a bless of it that does not say full is refused
// (ErrFullCopy), as for a new consumer's first answer, and the next
// answers say full until one is blessed full. Nothing is lost: the
// records stay until that bless, and a whole copy made after the query
// began holds every change the records describe.
//
// The inodes of BACKING's file system (statfs) stand for the tree: exact
// when BACKING is a file system of its own, more than the tree when it
// shares one, which only makes the valve later. A Backing that cannot
// count (not an InodeCounter, or a file system that reports no inodes)
// gets no valve. WholeAnswers counts the valve's answers; the tests
// assert that the storms never need it.

// wholeFactor is the valve's multiple of (inodes + records): twice the
// 4 × (entries + operations) that the storms and the random rounds of
// the tests stay within (and assert), so that it stays shut in them.
const wholeFactor = 8

// limitPaths sets q.limit once the scan has counted the records, and
// makes q.abandoned say true, with q.overflow, once the paths pass it.
// It is set after the scan: the scan asks abandoned on another goroutine
// than the one that adds the paths.
func (q *queryRun) limitPaths(b Backing) {
	ic, ok := b.(InodeCounter)
	if !ok {
		return
	}
	n := ic.InodesUsed()
	if n == 0 {
		return
	}
	q.limit = wholeFactor * (int(n) + q.records)
	reader := q.abandoned
	q.abandoned = func() bool {
		if len(q.paths) > q.limit {
			q.overflow = true
		}
		return q.overflow || reader()
	}
}

// wholeAnswer answers q's query full, with no path, once its paths
// passed q.limit in stage, and makes its consumer's state say full first.
// name is the consumer as the query was asked for it.
func (t *Tracker) wholeAnswer(q *queryRun, name, stage string) (*Answer, error) {
	why := fmt.Sprintf("the answer would list over %d paths, %d × (%d inodes in BACKING's file system + %d records): copy the whole tree",
		q.limit, wholeFactor, q.limit/wholeFactor-q.records, q.records)
	err := t.saveState(func(s *State) {
		s.queried(q.cur, q.P, time.Now())
		s.requireFull(q.cur)
	})
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	if !q.cur.full {
		t.wholeAnswers.Add(1) // not again while the requirement stands
	}
	delete(t.answerSizes, name) // the next answer's map starts small
	t.log.Warn("query answered full: "+why, "query", q.P, "consumer", q.cur.name, "stage", stage)
	return &Answer{Query: q.P, Blessed: q.cur.lastBlessed, BlessedBy: q.cur.blessedBy, Recovered: q.cur.recoveredAt != 0,
		Full: true, FullWhy: why, Reset: q.cur.reset, pathsOnly: q.pathsOnly}, nil
}

// requireFull makes consumer cur's answers say full until it blesses one
// of them full.
func (st *State) requireFull(cur cursor) {
	if cur.name == "" {
		st.Full = true
		return
	}
	st.consumer(cur.name).Full = true
}
