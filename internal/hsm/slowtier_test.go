package hsm

import (
	"context"
	"io"
	"sync/atomic"

	"github.com/hsmfs/hsmfs/internal/tier"
)

type tierT = tier.Tier

// slowTier holds a Put until proceed is closed.
type slowTier struct {
	opened, proceed chan struct{}
	removed         atomic.Int32
}

func (s *slowTier) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	close(s.opened)
	<-s.proceed
	_, err := io.Copy(io.Discard, r)
	return err
}

func (s *slowTier) Open(ctx context.Context, name string) (io.ReadCloser, int64, error) {
	return nil, 0, tier.ErrNotFound
}

func (s *slowTier) Remove(ctx context.Context, name string) error {
	s.removed.Add(1)
	return nil
}

func (s *slowTier) List(ctx context.Context, fn func(string) error) error { return nil }
func (s *slowTier) String() string                                        { return "slow" }
