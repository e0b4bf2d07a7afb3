//! The sweeper against the real Postgres and Garage: stale `uploading` reservations go with
//! their partial objects (fresh ones stay), unfinished work nobody runs is handed to the
//! executor again (fresh work is not), and an incomplete multipart upload is aborted once it
//! is older than the limit, not before, and only when no part arrived within the limit
//! either (an old upload still moving is left alone).

use bulk_import_api::{executor::Executor, sweeper::Sweeper};
use bulk_import_core::{
    db,
    repo::{self, NewJob, NewReservation, Takeover},
    storage::Backend as StorageBackend,
    testing::{settings_from, test_vars, Backend},
    ImportMode, Storage,
};
use futures_util::future::BoxFuture;
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};
use uuid::Uuid;

/// Records what the sweeper hands over (the executor itself is tested elsewhere).
#[derive(Default)]
struct Recording(Mutex<Vec<Uuid>>);

impl Executor for Recording {
    fn submit(&self, job_id: Uuid) -> BoxFuture<'_, anyhow::Result<()>> {
        self.0.lock().unwrap().push(job_id);
        Box::pin(async { Ok(()) })
    }
    fn resume(&self) -> BoxFuture<'_, anyhow::Result<usize>> {
        Box::pin(async { Ok(0) })
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

async fn backdate(pool: &sqlx::PgPool, id: Uuid, column: &str) {
    sqlx::query(&format!(
        "UPDATE import_jobs SET {column} = now() - interval '10 minutes' WHERE id = $1"
    ))
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_sweep_cleans_up_stale_reservations_resubmits_orphans_and_aborts_old_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let vars = test_vars(Backend::S3, dir.path()).await;
    let settings = settings_from(&vars);
    let pool = db::connect(settings.database_url(), 2).await.unwrap();
    let storage = Storage::from_settings(&settings).unwrap();
    let (user, org) = bulk_import_core::accounts::service_account(&pool, "sweep@example.com")
        .await
        .unwrap();

    // Two reservations with a partial object each; one stopped heartbeating long ago.
    let mut reservations = vec![];
    for key in ["stale", "fresh"] {
        let id = Uuid::new_v4();
        let object = bulk_import_core::job::upload_key(user, id);
        let r = NewReservation {
            id,
            org_id: org,
            user_id: user,
            idempotency_key: key,
            mode: ImportMode::InsertOnly,
            source_object: &object,
            options: &Default::default(),
        };
        assert!(repo::reserve(&pool, &r).await.unwrap());
        storage.put_stream(&object, &b"email\n"[..]).await.unwrap();
        reservations.push((id, object));
    }
    backdate(&pool, reservations[0].0, "updated_at").await;

    // Work: pending for long, pending just now, processing under an expired claim.
    let mut jobs = vec![];
    for key in ["old-pending", "new-pending", "expired-claim"] {
        let id = Uuid::new_v4();
        let j = NewJob {
            id,
            org_id: org,
            user_id: user,
            idempotency_key: key,
            fingerprint: "x",
            mode: ImportMode::InsertOnly,
            source_object: "uploads/none.csv",
            file_name: "a.csv",
            file_size: 1,
            options: &Default::default(),
        };
        repo::create_pending(&pool, &j).await.unwrap();
        jobs.push(id);
    }
    backdate(&pool, jobs[0], "updated_at").await;
    let claimed = repo::claim(
        &pool,
        jobs[2],
        Uuid::new_v4(),
        Duration::from_secs(1),
        Takeover::OwnerGone,
    )
    .await
    .unwrap();
    assert!(matches!(claimed, repo::Claim::Claimed(_)));
    backdate(&pool, jobs[2], "lease_expires_at").await;

    // An incomplete multipart upload under this deployment's prefix.
    let StorageBackend::S3(s3) = storage.backend() else {
        panic!("S3 backend expected")
    };
    let prefix = &settings.key_prefix;
    s3.client()
        .create_multipart_upload()
        .bucket(s3.bucket())
        .key(format!("{prefix}uploads/{user}/abandoned.csv"))
        .send()
        .await
        .unwrap();
    let unfinished = || async {
        s3.client()
            .list_multipart_uploads()
            .bucket(s3.bucket())
            .prefix(prefix.as_str())
            .send()
            .await
            .unwrap()
            .uploads()
            .len()
    };
    assert_eq!(unfinished().await, 1);

    let executor = Arc::new(Recording::default());
    let sweeper = Sweeper {
        pool: pool.clone(),
        storage: storage.clone(),
        executor: executor.clone(),
    };
    let minute = Duration::from_secs(60);
    let swept = sweeper
        .sweep(minute, minute, Duration::from_secs(3600))
        .await;
    assert_eq!(swept.expired_reservations, 1);
    assert_eq!(swept.aborted_uploads, 0, "younger than the limit: kept");
    assert_eq!(unfinished().await, 1);
    let mut submitted = executor.0.lock().unwrap().clone();
    submitted.sort();
    let mut want = vec![jobs[0], jobs[2]];
    want.sort();
    assert_eq!(
        submitted, want,
        "only work nobody runs is handed over again"
    );

    // The stale reservation and its object are gone; the fresh one keeps both.
    assert!(repo::get(&pool, reservations[0].0).await.unwrap().is_none());
    assert!(storage.size(&reservations[0].1).await.is_err());
    assert!(repo::get(&pool, reservations[1].0).await.unwrap().is_some());
    assert_eq!(storage.size(&reservations[1].1).await.unwrap(), 6);

    // Past the limit (here: any age), the abandoned upload is aborted.
    let swept = sweeper.sweep(minute, minute, Duration::ZERO).await;
    assert_eq!(swept.aborted_uploads, 1);
    assert_eq!(unfinished().await, 0);
}

#[tokio::test]
async fn a_sweep_aborts_a_stalled_multipart_upload_and_leaves_a_moving_one_alone() {
    let dir = tempfile::tempdir().unwrap();
    let vars = test_vars(Backend::S3, dir.path()).await;
    let settings = settings_from(&vars);
    let pool = db::connect(settings.database_url(), 2).await.unwrap();
    let storage = Storage::from_settings(&settings).unwrap();
    let StorageBackend::S3(s3) = storage.backend() else {
        panic!("S3 backend expected")
    };
    let prefix = settings.key_prefix.clone();
    let (client, bucket) = (s3.client(), s3.bucket());
    // Two multipart uploads, a part each.
    let mut uploads = vec![];
    for name in ["moving", "stalled"] {
        let key = format!("{prefix}uploads/{}/{name}.csv", Uuid::new_v4());
        let id = client
            .create_multipart_upload()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap()
            .upload_id()
            .unwrap()
            .to_string();
        uploads.push((key, id));
    }
    let part = |(key, id): &(String, String), n: i32| {
        client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .part_number(n)
            .body(vec![b'x'; 1024].into())
            .send()
    };
    part(&uploads[0], 1).await.unwrap();
    part(&uploads[1], 1).await.unwrap();
    // Both grow older than the age (5 s: the sweep below runs well within 5 s of the moving
    // upload's new part even on a loaded machine); then a part arrives for one of them.
    let age = Duration::from_secs(5);
    tokio::time::sleep(age + Duration::from_secs(1)).await;
    part(&uploads[0], 2).await.unwrap();
    let sweeper = Sweeper {
        pool,
        storage: storage.clone(),
        executor: Arc::new(Recording::default()),
    };
    let minute = Duration::from_secs(60);
    let swept = sweeper.sweep(minute, minute, age).await;
    let left: Vec<String> = client
        .list_multipart_uploads()
        .bucket(bucket)
        .prefix(prefix.as_str())
        .send()
        .await
        .unwrap()
        .uploads()
        .iter()
        .filter_map(|u| u.key().map(str::to_string))
        .collect();
    assert_eq!(swept.aborted_uploads, 1, "only the stalled upload");
    assert_eq!(
        left,
        vec![uploads[0].0.clone()],
        "the moving upload is left alone"
    );
}
