package storage

// SetListPageSize makes List read pages of n keys, so that tests see
// pagination with a few objects.
func (s *Store) SetListPageSize(n int32) { s.listPage = n }
